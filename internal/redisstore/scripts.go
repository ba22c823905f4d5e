package redisstore

import "github.com/redis/go-redis/v9"

// Every script starts with a shebang that declares its flags (Redis 7.0 and
// later), which Redis reads before it runs the script. Without one, Redis
// checks a script's memory only at its first write, and lets the rest run
// unchecked: the checkout script, whose first write is a DEL (always
// allowed), grew Redis to twice its maxmemory while plain SETs were refused.
//
//   - growing: no flags. When Redis is over its maxmemory, it refuses the
//     whole script before running it (an OOM error: see storeError), so a
//     refused call has written nothing.
//   - freeing: allow-oom. The script runs whatever the memory: completing,
//     cancelling, reading and expiring orders take away as much as they add
//     (the pending field and the index entry go; a tombstone
//     and, for an expiry, an event come), so that pending orders still
//     expire on time, and can still be paid, in a full Redis.
//   - reading: no-writes. The script only reads, so it runs whatever the
//     memory.
//
// A shebang script may touch only keys of the slot of its KEYS on a
// cluster; every key of a partition shares its hash tag, so they do.
const (
	growing = "#!lua\n"
	freeing = "#!lua flags=allow-oom\n"
	reading = "#!lua flags=no-writes\n"
)

// luaPrelude starts every script. Each state change is one script, so it is
// atomic, and each reads the clock from Redis (TIME): the deadline is the
// truth, and replicas of the service whose clocks disagree still agree on it.
// An order is due when deadline <= now; only a pending order that is not due
// can be completed or cancelled, and only a due one can expire, so exactly
// one of the three happens to it, whoever gets there first.
//
// KEYS[1] deadlines zset, KEYS[2] pending hash, KEYS[3] events stream,
// KEYS[4] wake channel.
// ARGV[1] key prefix of the partition ("oe:{0}:"), ARGV[2] retention in ms;
// each script's own arguments follow from ARGV[3].
//
// Records are strings "<status> <created ms> <deadline ms> <closed ms>
// <metadata JSON>"; the metadata is last and may be empty.
const luaPrelude = luaStreamIDs + `
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Set when current() expires the order it was asked about, and when that
-- was more than a second after its deadline (for the metrics).
local expired_here, caught_here = 0, 0

-- resched is the "r<n> " that comes before the metadata of an order
-- rescheduled n times, and nothing for one never rescheduled, so that the
-- records of most orders are no longer for it.
local function resched(n)
  if n > 0 then return 'r' .. n .. ' ' end
  return ''
end

-- asked is the "t<ms> " or "a<ms> " that records what the checkout of a
-- pending order asked for (a ttl, or an absolute deadline), so that a
-- repeated checkout can be told the same request or another; '' for none
-- (a closed order, or one created before it was recorded).
local function askedTok(a)
  if a ~= '' then return a .. ' ' end
  return ''
end

-- record builds the record of an order, pending or closed (then it is the
-- tombstone's value): the one place that knows its layout.
local function record(status, created, deadline, closed, meta, n, asked)
  return status .. ' ' .. created .. ' ' .. deadline .. ' ' .. closed .. ' ' .. resched(n) .. askedTok(asked or '') .. meta
end

-- pendingValue builds a field of the pending hash.
local function pendingValue(created, meta, n, asked)
  return created .. ' ' .. resched(n) .. askedTok(asked) .. meta
end

-- splitPending reads a field of the pending hash, "<created ms>
-- [r<reschedules>] [t<ttl ms>|a<deadline ms>] <metadata>", into the
-- created time, the metadata, the number of reschedules and the asked
-- token; a missing field (false) reads as created 0, no metadata, none and
-- ''. The tokens start with a lower-case letter; the metadata, JSON, with
-- '{'.
local function splitPending(rec)
  if not rec then return '0', '', 0, '' end
  local sp = string.find(rec, ' ', 1, true)
  local created, rest = string.sub(rec, 1, sp - 1), string.sub(rec, sp + 1)
  local n, asked = 0, ''
  while string.find(rest, '^[a-z]') do
    local sp2 = string.find(rest, ' ', 1, true)
    local tok = string.sub(rest, 1, sp2 - 1)
    rest = string.sub(rest, sp2 + 1)
    if string.sub(tok, 1, 1) == 'r' then n = tonumber(string.sub(tok, 2)) else asked = tok end
  end
  return created, rest, n, asked
end

-- pendingFields returns the created time, metadata, number of
-- reschedules and asked token of a pending order.
local function pendingFields(id)
  return splitPending(redis.call('HGET', KEYS[2], id))
end

-- trimHorizon returns the id before which the events stream may be
-- trimmed: the retention's horizon, or an older event that a consumer group
-- still holds (in flight, or a dead letter) or has yet to deliver. Events a
-- group needs are kept, never dropped unseen.
local function trimHorizon()
  local h = (now - retention) .. '-0'
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[3])
  if groups['err'] then return h end
  for _, gi in ipairs(groups) do
    local t = {}
    for i = 1, #gi, 2 do t[gi[i]] = gi[i + 1] end
    -- Everything after the last delivered event: MINID keeps the
    -- threshold itself, so the threshold is the id just after it.
    local last = t['last-delivered-id']
    local d = string.find(last, '-', 1, true)
    local keep = string.sub(last, 1, d) .. (tonumber(string.sub(last, d + 1)) + 1)
    if tonumber(t['pending']) > 0 then
      local first = redis.call('XPENDING', KEYS[3], t['name'])[2]
      if idLess(first, keep) then keep = first end
    end
    if idLess(keep, h) then h = keep end
  end
  return h
end

-- alarm sets the partition's alarm key (see keys.go) to expire grace ms
-- after the deadline at, or deletes it when at is nil: Redis's expired
-- event for it wakes the sweepers when none has swept the partition within
-- the grace after its earliest deadline.
local function alarm(at, grace)
  if at then
    redis.call('SET', prefix .. 'alarm', at, 'PX', math.max(at - now, 0) + grace)
  else
    redis.call('DEL', prefix .. 'alarm')
  end
end

-- close ends a pending order with the given status, writes its tombstone and,
-- for an expiry, appends the event to the log. The ZREM is the claim: it
-- succeeds once, so the event is appended once.
local function close(id, deadline, status)
  local created, meta, n = pendingFields(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  local rec = record(status, created, deadline, now, meta, n)
  redis.call('SET', prefix .. 'closed:' .. id, rec, 'PX', retention)
  redis.call('ZADD', prefix .. 'retained', deadline, id)
  if status ~= 'expired' then redis.call('HINCRBY', prefix .. 'counts', status, 1) end
  if status == 'expired' then
    redis.call('XADD', KEYS[3], 'MINID', trimHorizon(), '*',
      'id', id, 'c', created, 'd', deadline, 'x', now, 'm', meta)
  end
  return rec
end

-- current returns the state of an order, expiring it first if it is due:
-- 'pending', 'closed' or 'missing', with its record.
local function current(id)
  local d = redis.call('ZSCORE', KEYS[1], id)
  if d then
    if tonumber(d) > now then
      local created, meta, n, asked = pendingFields(id)
      return 'pending', record('pending', created, d, 0, meta, n, asked)
    end
    expired_here = 1
    if now - tonumber(d) > 1000 then caught_here = 1 end
    return 'closed', close(id, d, 'expired')
  end
  local rec = redis.call('GET', prefix .. 'closed:' .. id)
  if rec then return 'closed', rec end
  return 'missing', ''
end
`

// luaStreamIDs compares stream ids in Lua, for the order scripts' trimming
// and the consumer group scripts.
const luaStreamIDs = `
-- idLess compares two stream ids "<ms>-<seq>".
local function idLess(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if ma ~= mb then return ma < mb end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end
`

// The batch scripts (checkout, get, finish) each take the calls of many
// orders of one partition (see batch.go), run them one after the other, in
// the order given, and reply {now, expired here, caught up here, code 1,
// record 1, code 2, record 2, ...}: now is Redis's clock in ms; the next two
// count the orders the calls found due and expired themselves (caught up:
// more than a second after their deadline), so that they are counted as the
// sweeper's expirations are; then, for each call, a code saying what
// happened and the order's record as the call leaves it (empty when
// missing). One order's call that fails (a key of the wrong type) answers
// the code 'error' with Redis's message as its record, and the others go
// on, as they would have in scripts of their own.
//
// luaBatch runs them: it holds the reply and a call of one order.
const luaBatch = `
local out = {now, 0, 0}
-- answer runs f(...) as one order's call and appends its code and record
-- to the reply.
local function answer(f, ...)
  expired_here, caught_here = 0, 0
  local ok, code, rec = pcall(f, ...)
  if not ok then
    if type(code) == 'table' then code = code['err'] end
    code, rec = 'error', tostring(code)
  end
  out[2], out[3] = out[2] + expired_here, out[3] + caught_here
  out[#out + 1] = code
  out[#out + 1] = rec
end
`

// checkoutScript creates pending orders, each unless one with its id is
// pending. Per order it reads what is there; the index, the pending hash
// and the wake-up take one command for the batch.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> alarmGrace in ms: a new earliest deadline sets the alarm this
// much after it
// ARGV[4], ARGV[5], ARGV[6], ARGV[7] -> an order: its id, what it asks for
// ("t<ttl ms>", or "a<deadline unix ms>"), the maximum ttl in ms (for a
// deadline) and metadata JSON (empty for none); the next from ARGV[8] on,
// and so on
//
// Returns the batch scripts' reply with, for each order, the code
// 'created' -> the order was created
// 'exists'  -> an order with this id is pending (perhaps created earlier in
// the batch); the record is that order's, with what its checkout asked for,
// for the caller to tell a retry from another request
// 'bad'     -> the deadline asked for is not after now or past the maximum
// ttl; nothing was written
// An order closed under this id, or due (it is expired first), is replaced.
var checkoutScript = redis.NewScript(growing + luaPrelude + luaBatch + `
local grace = tonumber(ARGV[3])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local closedPrefix = prefix .. 'closed:'
local zadd, hset, made = {}, {}, {}
local soonest
local function checkout(id, asked, maxTTL, meta)
  if made[id] then return 'exists', made[id] end
  local state, rec = current(id)
  if state == 'pending' then return 'exists', rec end
  local ttl = tonumber(string.sub(asked, 2))
  if string.sub(asked, 1, 1) == 'a' then
    ttl = ttl - now
    if ttl <= 0 or ttl > maxTTL then return 'bad', '' end
  end
  -- Only a tombstone is there to replace: a missing order has none.
  if state == 'closed' then
    redis.call('DEL', closedPrefix .. id)
    redis.call('ZREM', prefix .. 'retained', id)
  end
  local deadline = now + ttl
  zadd[#zadd + 1] = deadline
  zadd[#zadd + 1] = id
  hset[#hset + 1] = id
  hset[#hset + 1] = pendingValue(now, meta, 0, asked)
  if not soonest or deadline < soonest then soonest = deadline end
  made[id] = record('pending', now, deadline, 0, meta, 0, asked)
  return 'created', made[id]
end
for i = 4, #ARGV, 4 do
  answer(checkout, ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3])
end
if #zadd > 0 then
  redis.call('ZADD', KEYS[1], unpack(zadd))
  redis.call('HSET', KEYS[2], unpack(hset))
  -- A new earliest deadline: sweepers that sleep until a later one must
  -- wake, and the alarm goes off after it should the wake-up be lost.
  if #first == 0 or soonest < tonumber(first[2]) then
    redis.call('PUBLISH', KEYS[4], soonest)
    alarm(soonest, grace)
  end
end
return out
`)

// getScript reads orders, expiring each first if it is due, so that nobody
// sees a pending order past its deadline.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3], ARGV[4], ... -> the order ids
//
// Returns the batch scripts' reply with, for each order, the code
// 'pending' -> the order is pending
// 'closed'  -> the order is closed (perhaps expired by this call)
// 'missing' -> no order has this id, or it closed longer ago than retention
var getScript = redis.NewScript(freeing + luaPrelude + luaBatch + `
for i = 3, #ARGV do answer(current, ARGV[i]) end
return out
`)

// finishScript completes or cancels pending orders that are not due.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3], ARGV[4] -> an order: its id, and 'completed' or 'cancelled';
// the next from ARGV[5] on, and so on
//
// Returns the batch scripts' reply with, for each order, the code
// 'ok'      -> the order is closed with the status asked for
// 'closed'  -> the order was closed already (perhaps expired by this call,
// being due); the record is the order as it already was
// 'missing' -> no order has this id, or it closed longer ago than retention
var finishScript = redis.NewScript(freeing + luaPrelude + luaBatch + `
local function finish(id, to)
  -- A pending order before its deadline, the common case, is closed at
  -- once; current() sorts out the rest (due, closed, missing).
  local d = redis.call('ZSCORE', KEYS[1], id)
  if d and tonumber(d) > now then return 'ok', close(id, d, to) end
  return current(id)
end
for i = 3, #ARGV, 2 do answer(finish, ARGV[i], ARGV[i + 1]) end
return out
`)

// rescheduleScript gives a pending order that is not due a new deadline.
// A deadline earlier than every other one wakes the sweepers and sets the
// alarm, as a checkout's does.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> order id
// ARGV[4] -> 'ttl': ARGV[5] is the new ttl in ms from now; 'at': ARGV[5] is
// the new deadline in unix ms
// ARGV[6] -> the deadline the caller expects the order to have in unix ms,
// or ” for no check
// ARGV[7] -> the maximum ttl in ms
// ARGV[8] -> alarmGrace in ms
//
// Returns {code, record, now, expired here, caught up here}: the batch
// scripts' reply for one order (see luaBatch), with code
// 'ok'       -> the order has its new deadline
// 'mismatch' -> the order's deadline is not the expected one; unchanged
// 'bad'      -> the new deadline is not after now or past the maximum ttl;
// the record is the order, unchanged
// 'closed'   -> the order is closed (perhaps expired by this call)
// 'missing'  -> no order has this id, or it closed longer ago than retention
var rescheduleScript = redis.NewScript(growing + luaPrelude + `
local id = ARGV[3]
local state, rec = current(id)
if state ~= 'pending' then return {state, rec, now, expired_here, caught_here} end
local d = tonumber(redis.call('ZSCORE', KEYS[1], id))
if ARGV[6] ~= '' and tonumber(ARGV[6]) ~= d then return {'mismatch', rec, now, 0, 0} end
local nd = tonumber(ARGV[5])
if ARGV[4] == 'ttl' then nd = now + nd end
if nd <= now or nd > now + tonumber(ARGV[7]) then return {'bad', rec, now, 0, 0} end
local created, meta, n, asked = pendingFields(id)
n = n + 1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[1], 'XX', nd, id)
redis.call('HSET', KEYS[2], id, pendingValue(created, meta, n, asked))
if nd < tonumber(first[2]) then
  redis.call('PUBLISH', KEYS[4], nd)
  alarm(nd, tonumber(ARGV[8]))
end
return {'ok', record('pending', created, nd, 0, meta, n, asked), now, 0, 0}
`)

// expireDueScript expires up to a batch of due orders, oldest deadline
// first: the per-order work is only what cannot be shared (the tombstone and
// the event), every other command takes the whole batch. It then sets the
// partition's alarm after the earliest deadline left, or deletes it when
// none is pending.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> batch size (at most a few thousand: the ids go through unpack)
// ARGV[4] -> alarmGrace in ms
//
// Returns {expired, now, next deadline, caught up}:
// expired       -> how many orders it expired; the batch size means more
// may be due
// now           -> Redis's clock in ms: the sweeper sleeps until the next
// deadline by Redis's clock, not its own
// next deadline -> the earliest deadline left in ms, -1 when none is pending
// caught up     -> how many of the expired orders it claimed more than a
// second after their deadline
var expireDueScript = redis.NewScript(freeing + luaPrelude + `
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]), 'WITHSCORES')
local n = #due / 2
local caught = 0
if n > 0 then
  local ids = {}
  for i = 1, n do
    ids[i] = due[2 * i - 1]
  end
  -- The claim. The due orders are the first n of the index by rank, so
  -- removing ranks 0..n-1 removes exactly them; the script is atomic, so no
  -- other replica can have claimed one of them meanwhile.
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
  local recs = redis.call('HMGET', KEYS[2], unpack(ids))
  redis.call('HDEL', KEYS[2], unpack(ids))
  local closedPrefix = prefix .. 'closed:'
  local x = tostring(now)
  local px = ARGV[2]
  local retained = {}
  for i = 1, n do
    local id, d = ids[i], due[2 * i]
    local created, meta, rn = splitPending(recs[i])
    redis.call('SET', closedPrefix .. id, record('expired', created, d, x, meta, rn), 'PX', px)
    redis.call('XADD', KEYS[3], '*', 'id', id, 'c', created, 'd', d, 'x', x, 'm', meta)
    if now - tonumber(d) > 1000 then caught = caught + 1 end
    retained[2 * i - 1], retained[2 * i] = d, id
  end
  redis.call('ZADD', prefix .. 'retained', unpack(retained))
end
-- The index of closed orders loses them a retention after their deadline
-- (see keys.go).
redis.call('ZREMRANGEBYSCORE', prefix .. 'retained', '-inf', '(' .. (now - retention))
-- One trim for the batch instead of one per XADD, and one on every sweep
-- (a second apart at most) when nothing expired, so that a quiet log is
-- trimmed too. Exact, not '~': an approximate trim drops only whole nodes
-- of about a hundred entries, so that a quiet log would keep its old
-- events, and a group's needs could not be told from a trim that did not
-- run.
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XTRIM', KEYS[3], 'MINID', trimHorizon())
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_deadline = -1
if #nxt > 0 then
  next_deadline = tonumber(nxt[2])
  alarm(next_deadline, tonumber(ARGV[4]))
else
  alarm(nil)
end
return {n, now, next_deadline, caught}
`)

// identityScript reads the store's identity, the number of partitions and
// the epoch, and records what is missing (see epoch.go). Both keys are in one
// slot: the script is atomic on a Redis Cluster too.
//
// KEYS[1] -> oe:partitions
// KEYS[2] -> the epoch key
// ARGV[1] -> the epoch the replica runs with, empty when it starts
// ARGV[2] -> the number of partitions the replica runs with, or when it
// starts the number it asks for; recorded if none is
// ARGV[3] -> a new random epoch id, used if the store has no epoch
//
// Returns {state, epoch, partitions}:
// 'same'    -> the store has the epoch the replica runs with, or any epoch
// when it starts
// 'new'     -> the store had no epoch: it is new, or it was emptied; the
// epoch returned was just recorded, and its history begins now (at 0 for a
// store with partitions but no epoch seen at a start: one recorded before
// epochs existed, whose history is whole)
// 'changed' -> the store has an epoch other than the replica's; nothing was
// written, and partitions is false when none is recorded
// Partitions is recorded when missing, except in the 'changed' case.
//
// Freeing, although it may write: it writes two short keys at most, and only
// where they are missing, and a replica started, or renewing the store,
// while Redis is over its maxmemory must still come up and expire what is
// pending.
var identityScript = redis.NewScript(freeing + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local parts = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
local state = 'same'
if not epoch then
  local since = now
  if ARGV[1] == '' and parts then since = 0 end
  epoch = ARGV[3] .. ' ' .. since
  redis.call('SET', KEYS[2], epoch)
  state = 'new'
elseif ARGV[1] ~= '' and epoch ~= ARGV[1] then
  return {'changed', epoch, parts}
end
if not parts then
  parts = ARGV[2]
  redis.call('SET', KEYS[1], parts)
end
return {state, epoch, parts}
`)

// clockScript reads Redis's clock and the store's epoch for CheckCursor, on
// the epoch key's master.
//
// KEYS[1] -> the epoch key
//
// Returns {now, epoch}: Redis's clock in ms, and the epoch or false when the
// store has none (it was emptied).
var clockScript = redis.NewScript(reading + `
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), redis.call('GET', KEYS[1])}
`)

// lastIDScript reads the id of the last entry ever added to a partition's
// event stream, even if trimmed since, on the partition's master, which has
// every event a replica may have shown a watcher.
//
// KEYS[1] -> the partition's events stream
//
// Returns the stream's last-generated-id, "0-0" when there is no stream
// (nothing expired in this history yet).
var lastIDScript = redis.NewScript(reading + `
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
`)

// listScript reads the next entries of a partition's indexes, by deadline
// then id, after a position: the deadline index of pending orders, the index
// of retained closed orders (see keys.go), or both merged. Reading both in
// one script keeps the partition's listing whole while orders close: an
// order moves from one index to the other at the same place, and the next
// read starts after the same position in both. The script finds the
// position by rank, with a binary search among the entries of the
// position's deadline, so that its cost is O(log n) for the position and
// O(1) per entry read, however many orders the partition holds: never a
// scan. Redis orders the members of one score by their bytes, as Go
// compares strings; Lua's own comparison follows the locale, so bytesLess
// compares instead.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> 'pending', 'closed' or 'both': which indexes
// ARGV[4] -> 'asc' or 'desc'
// ARGV[5], ARGV[6] -> the position's deadline (ms) and id, both empty
// for the start
// ARGV[7], ARGV[8] -> the least and greatest deadline wanted, in ms, or
// '-inf' and '+inf'
// ARGV[9] -> the most entries to read
//
// Returns {now, done, id 1, deadline 1, record 1, id 2, ...}: done is 1
// when no entry within the deadlines follows the last one returned. A
// record is 'pending ...' for a pending order, the tombstone for a closed
// one, and empty for a closed order whose tombstone is gone (the index
// keeps it until a retention after its deadline).
var listScript = redis.NewScript(reading + luaPrelude + `
local desc = ARGV[4] == 'desc'
local lo, hi, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])

local function bytesLess(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- below counts the entries of index before (d, id), and the entry (d, id)
-- itself when with is true.
local function below(index, d, id, with)
  local n = redis.call('ZCOUNT', index, '-inf', '(' .. d)
  local same = redis.call('ZCOUNT', index, d, d)
  local a, b = 0, same
  while a < b do
    local mid = math.floor((a + b) / 2)
    local m = redis.call('ZRANGE', index, n + mid, n + mid)[1]
    local past
    if with then past = bytesLess(id, m) else past = not bytesLess(m, id) end
    if past then b = mid else a = mid + 1 end
  end
  return n + a
end

-- read returns up to limit entries of index after the position, in the
-- order asked for and within the deadlines, as {id, deadline string,
-- deadline, pending}, and whether the index has no more.
local function read(index, pending)
  local rows, done = {}, false
  local raw
  if not desc then
    local start = redis.call('ZCOUNT', index, '-inf', '(' .. lo)
    if ARGV[5] ~= '' then start = math.max(start, below(index, ARGV[5], ARGV[6], true)) end
    raw = redis.call('ZRANGE', index, start, start + limit - 1, 'WITHSCORES')
  else
    local stop = redis.call('ZCOUNT', index, '-inf', hi) - 1
    if ARGV[5] ~= '' then stop = math.min(stop, below(index, ARGV[5], ARGV[6], false) - 1) end
    local first = math.max(0, stop - limit + 1)
    raw = {}
    if stop >= 0 then
      local r = redis.call('ZRANGE', index, first, stop, 'WITHSCORES')
      for i = #r - 1, 1, -2 do
        raw[#raw + 1] = r[i]
        raw[#raw + 1] = r[i + 1]
      end
    end
  end
  if #raw < 2 * limit then done = true end
  for i = 1, #raw, 2 do
    local v = tonumber(raw[i + 1])
    if (not desc and hi ~= '+inf' and v > tonumber(hi)) or (desc and lo ~= '-inf' and v < tonumber(lo)) then
      done = true
      break
    end
    rows[#rows + 1] = {raw[i], raw[i + 1], v, pending}
  end
  return rows, done
end

local function before(a, b)
  if a[3] ~= b[3] then
    if desc then return a[3] > b[3] end
    return a[3] < b[3]
  end
  if desc then return bytesLess(b[1], a[1]) end
  return bytesLess(a[1], b[1])
end

local rows, done = {}, true
if ARGV[3] ~= 'closed' then rows, done = read(KEYS[1], true) end
if ARGV[3] ~= 'pending' then
  local c, cdone = read(prefix .. 'retained', false)
  if ARGV[3] == 'closed' then
    rows, done = c, cdone
  else
    -- Merge the two, and keep the first limit: the next read starts after
    -- the last one kept, in both indexes.
    local m, i, j = {}, 1, 1
    while #m < limit and (i <= #rows or j <= #c) do
      if j > #c or (i <= #rows and before(rows[i], c[j])) then
        m[#m + 1] = rows[i]
        i = i + 1
      else
        m[#m + 1] = c[j]
        j = j + 1
      end
    end
    done = done and cdone and i > #rows and j > #c
    rows = m
  end
end
local out = {now, 0}
if done then out[2] = 1 end
for _, r in ipairs(rows) do
  local rec
  if r[4] then
    local created, meta, n = pendingFields(r[1])
    rec = record('pending', created, r[2], 0, meta, n)
  else
    rec = redis.call('GET', prefix .. 'closed:' .. r[1]) or ''
  end
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = rec
end
return out
`)
