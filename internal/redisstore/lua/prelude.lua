-- prelude.lua starts every script. Each state change is one script, so it is
-- atomic, and each reads the clock from Redis (TIME): the deadline is the
-- truth, and replicas of the service whose clocks disagree still agree on it.
-- An order is due when deadline <= now; only a pending order that is not due
-- can be completed or cancelled, and only a due one can expire, so exactly
-- one of the three happens to it, whoever gets there first.
--
-- KEYS[1] deadlines zset, KEYS[2] pending hash, KEYS[3] events stream,
-- KEYS[4] wake channel: the partition's keys, which the helpers and scripts
-- read as K[1] to K[4] (see usePartition).
-- ARGV[1] key prefix of the partition ("oe:{0}:"), ARGV[2] retention in ms;
-- each script's own arguments follow from ARGV[3].
--
-- Records are strings "<status> <created ms> <deadline ms> <closed ms>
-- <metadata JSON>"; the metadata is last and may be empty.
-- needs: stream_ids

local prefix = ARGV[1]
local K = {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}
local retention = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Set when current() expires the order it was asked about, and when that
-- was more than a second after its deadline (for the metrics).
local expired_here, caught_here = 0, 0

-- usePartition makes the partition whose key prefix is p the one that
-- prefix and K name, for a script over several partitions of one master
-- (expire_many.lua). The keys are named as keys.go names them
-- (TestClusterClaimsTogether finds each claim in its partition's log).
local function usePartition(p)
  prefix = p
  K = {p .. 'deadlines', p .. 'pending', p .. 'events', p .. 'wake'}
end

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
  return splitPending(redis.call('HGET', K[2], id))
end

-- trimHorizon returns the id before which the events stream may be
-- trimmed: the retention's horizon, or an older event that a consumer group
-- still holds (in flight, or a dead letter) or has yet to deliver. Events a
-- group needs are kept, never dropped unseen.
local function trimHorizon()
  local h = (now - retention) .. '-0'
  local groups = redis.pcall('XINFO', 'GROUPS', K[3])
  if groups['err'] then return h end
  for _, gi in ipairs(groups) do
    local t = {}
    for i = 1, #gi, 2 do t[gi[i]] = gi[i + 1] end
    -- Everything after the last delivered event: MINID keeps the
    -- threshold itself, so the threshold is the id just after it.
    local keep = idAfter(t['last-delivered-id'])
    if tonumber(t['pending']) > 0 then
      local first = redis.call('XPENDING', K[3], t['name'])[2]
      if idLess(first, keep) then keep = first end
    end
    if idLess(keep, h) then h = keep end
  end
  return h
end

-- trimLog drops the events before the id h, at most limit of them (it
-- returns true when there may be more, and the sweeper's next call goes
-- on), and with each the tombstone written with it, unless the id has
-- closed again since: an expired order's tombstone lives
-- as long as its event, the retention after it expired or longer while a
-- consumer group needs the event (see trimHorizon). The trim is exact, not
-- '~': an approximate one drops only whole nodes of about a hundred
-- entries, so that a quiet log would keep its old events and their
-- tombstones, and a group's needs could not be told from a trim that did
-- not run.
local function trimLog(h, limit)
  local old = redis.call('XRANGE', K[3], '-', '(' .. h, 'COUNT', limit)
  if #old == 0 then return false end
  local ids = {}
  for i, e in ipairs(old) do ids[i] = e[2][2] end
  local recs = redis.call('HMGET', prefix .. 'expired', unpack(ids))
  local gone = {}
  for i, e in ipairs(old) do
    -- The event's fields: id, c, d, x, m; the record's: status, created,
    -- deadline, closed.
    local f = e[2]
    local _, _, d, x = string.find(recs[i] or '', '^%S+ %S+ (%S+) (%S+)')
    if d == f[6] and x == f[8] then gone[#gone + 1] = ids[i] end
  end
  if #gone > 0 then redis.call('HDEL', prefix .. 'expired', unpack(gone)) end
  -- Up to and with the last entry read, when there may be more.
  if #old == limit then h = idAfter(old[#old][1]) end
  redis.call('XTRIM', K[3], 'MINID', h)
  return #old == limit
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

-- tombstone returns the record of a closed order, or false: an expired
-- order's is a field of the partition's hash of them, which lives as long as
-- the order's event (see trimLog); a completed or cancelled order's, and an
-- expired one's from before that hash, is a key of its own with the
-- retention as ttl.
local function tombstone(id)
  return redis.call('HGET', prefix .. 'expired', id) or redis.call('GET', prefix .. 'closed:' .. id)
end

-- forget removes a closed order's tombstone and index entry, for a new
-- order with its id.
local function forget(id)
  redis.call('HDEL', prefix .. 'expired', id)
  redis.call('DEL', prefix .. 'closed:' .. id)
  redis.call('ZREM', prefix .. 'retained', id)
end

-- close ends a pending order with the given status, writes its tombstone and,
-- for an expiry, appends the event to the log. The ZREM is the claim: it
-- succeeds once, so the event is appended once. The log is trimmed by the
-- sweeper (see trimLog).
local function close(id, deadline, status)
  local created, meta, n = pendingFields(id)
  redis.call('ZREM', K[1], id)
  redis.call('HDEL', K[2], id)
  local rec = record(status, created, deadline, now, meta, n)
  redis.call('ZADD', prefix .. 'retained', deadline, id)
  if status == 'expired' then
    redis.call('HSET', prefix .. 'expired', id, rec)
    redis.call('XADD', K[3], '*', 'id', id, 'c', created, 'd', deadline, 'x', now, 'm', meta)
  else
    redis.call('SET', prefix .. 'closed:' .. id, rec, 'PX', retention)
    redis.call('HINCRBY', prefix .. 'counts', status, 1)
  end
  return rec
end

-- current returns the state of an order, expiring it first if it is due:
-- 'pending', 'closed' or 'missing', with its record.
local function current(id)
  local d = redis.call('ZSCORE', K[1], id)
  if d then
    if tonumber(d) > now then
      local created, meta, n, asked = pendingFields(id)
      return 'pending', record('pending', created, d, 0, meta, n, asked)
    end
    expired_here = 1
    if now - tonumber(d) > 1000 then caught_here = 1 end
    return 'closed', close(id, d, 'expired')
  end
  local rec = tombstone(id)
  if rec then return 'closed', rec end
  return 'missing', ''
end
