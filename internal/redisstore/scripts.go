package redisstore

import "github.com/redis/go-redis/v9"

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
const luaPrelude = `
local prefix = ARGV[1]
local retention = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Set when current() expires the order it was asked about, and when that
-- was more than a second after its deadline (for the metrics).
local expired_here, caught_here = 0, 0

-- record builds the record of an order, pending or closed (then it is the
-- tombstone's value): the one place that knows its layout.
local function record(status, created, deadline, closed, meta)
  return status .. ' ' .. created .. ' ' .. deadline .. ' ' .. closed .. ' ' .. meta
end

-- splitPending reads a field of the pending hash, "<created ms> <metadata>",
-- into the created time and the metadata; a missing field (false) reads as
-- created 0 and no metadata.
local function splitPending(rec)
  if not rec then return '0', '' end
  local sp = string.find(rec, ' ', 1, true)
  return string.sub(rec, 1, sp - 1), string.sub(rec, sp + 1)
end

-- pendingFields returns the created time and metadata of a pending order.
local function pendingFields(id)
  return splitPending(redis.call('HGET', KEYS[2], id))
end

-- close ends a pending order with the given status, writes its tombstone and,
-- for an expiry, appends the event to the log. The ZREM is the claim: it
-- succeeds once, so the event is appended once.
local function close(id, deadline, status)
  local created, meta = pendingFields(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', prefix .. 'order:' .. id)
  local rec = record(status, created, deadline, now, meta)
  redis.call('SET', prefix .. 'closed:' .. id, rec, 'PX', retention)
  if status == 'expired' then
    redis.call('XADD', KEYS[3], 'MINID', '~', now - retention, '*',
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
      local created, meta = pendingFields(id)
      return 'pending', record('pending', created, d, 0, meta)
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

// The order scripts (checkout, get, finish) reply {code, record, now,
// expired here, caught up here}: the code says what happened, the record is
// the order's as the call leaves it (empty when missing), now is Redis's clock
// in ms, and the last two are 1 when the call found the order due and
// expired it itself (caught up: more than a second after its deadline), so
// that it is counted as the sweeper's expirations are.

// checkoutScript creates a pending order unless one with this id is pending.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> order id
// ARGV[4] -> ttl in ms
// ARGV[5] -> metadata JSON, empty for none
// ARGV[6] -> lifetime of the ttl key in ms: the ttl plus ttlKeyGrace (see
// checkoutArgs)
//
// Returns the order scripts' reply with code
// 'created' -> the order was created
// 'exists'  -> an order with this id is pending; the record is that order's
// An order closed under this id, or due (it is expired first), is replaced.
var checkoutScript = redis.NewScript(luaPrelude + `
local id = ARGV[3]
local state, rec = current(id)
if state == 'pending' then return {'exists', rec, now, expired_here, caught_here} end
local deadline = now + tonumber(ARGV[4])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('DEL', prefix .. 'closed:' .. id)
redis.call('ZADD', KEYS[1], deadline, id)
redis.call('HSET', KEYS[2], id, now .. ' ' .. ARGV[5])
redis.call('SET', prefix .. 'order:' .. id, '1', 'PX', ARGV[6])
-- A new earliest deadline: sweepers that sleep until a later one must wake.
if #first == 0 or deadline < tonumber(first[2]) then
  redis.call('PUBLISH', KEYS[4], deadline)
end
return {'created', record('pending', now, deadline, 0, ARGV[5]), now, expired_here, caught_here}
`)

// getScript reads an order, expiring it first if it is due, so that nobody
// sees a pending order past its deadline.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> order id
//
// Returns the order scripts' reply with code
// 'pending' -> the order is pending
// 'closed'  -> the order is closed (perhaps expired by this call)
// 'missing' -> no order has this id, or it closed longer ago than retention
var getScript = redis.NewScript(luaPrelude + `
local state, rec = current(ARGV[3])
return {state, rec, now, expired_here, caught_here}
`)

// finishScript completes or cancels a pending order that is not due.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> order id
// ARGV[4] -> 'completed' or 'cancelled'
//
// Returns the order scripts' reply with code
// 'ok'      -> the order is closed with the status asked for
// 'closed'  -> the order was closed already (perhaps expired by this call,
// being due); the record is the order as it already was
// 'missing' -> no order has this id, or it closed longer ago than retention
var finishScript = redis.NewScript(luaPrelude + `
local id = ARGV[3]
local state, rec = current(id)
if state ~= 'pending' then return {state, rec, now, expired_here, caught_here} end
local d = redis.call('ZSCORE', KEYS[1], id)
return {'ok', close(id, d, ARGV[4]), now, expired_here, caught_here}
`)

// expireDueScript expires up to a batch of due orders, oldest deadline
// first: the per-order work is only what cannot be shared (the tombstone and
// the event), every other command takes the whole batch.
//
// KEYS, ARGV[1], ARGV[2]: see luaPrelude.
// ARGV[3] -> batch size (at most a few thousand: the ids go through unpack)
//
// Returns {expired, now, next deadline, caught up}:
// expired       -> how many orders it expired; the batch size means more
// may be due
// now           -> Redis's clock in ms: the sweeper sleeps until the next
// deadline by Redis's clock, not its own
// next deadline -> the earliest deadline left in ms, -1 when none is pending
// caught up     -> how many of the expired orders it claimed more than a
// second after their deadline
var expireDueScript = redis.NewScript(luaPrelude + `
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]), 'WITHSCORES')
local n = #due / 2
local caught = 0
if n > 0 then
  local ids, ttlKeys = {}, {}
  local orderPrefix = prefix .. 'order:'
  for i = 1, n do
    local id = due[2 * i - 1]
    ids[i] = id
    ttlKeys[i] = orderPrefix .. id
  end
  -- The claim. The due orders are the first n of the index by rank, so
  -- removing ranks 0..n-1 removes exactly them; the script is atomic, so no
  -- other replica can have claimed one of them meanwhile.
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
  local recs = redis.call('HMGET', KEYS[2], unpack(ids))
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('DEL', unpack(ttlKeys))
  local closedPrefix = prefix .. 'closed:'
  local x = tostring(now)
  local px = ARGV[2]
  for i = 1, n do
    local id, d = ids[i], due[2 * i]
    local created, meta = splitPending(recs[i])
    redis.call('SET', closedPrefix .. id, record('expired', created, d, x, meta), 'PX', px)
    redis.call('XADD', KEYS[3], '*', 'id', id, 'c', created, 'd', d, 'x', x, 'm', meta)
    if now - tonumber(d) > 1000 then caught = caught + 1 end
  end
  -- One trim for the batch instead of one per XADD.
  redis.call('XTRIM', KEYS[3], 'MINID', '~', now - retention)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_deadline = -1
if #nxt > 0 then next_deadline = tonumber(nxt[2]) end
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
var identityScript = redis.NewScript(`
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
var clockScript = redis.NewScript(`
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
var lastIDScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
`)
