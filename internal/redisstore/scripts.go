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

-- pendingRecord returns the created time and metadata of a pending order.
local function pendingFields(id)
  local rec = redis.call('HGET', KEYS[2], id)
  if not rec then return '0', '' end
  local sp = string.find(rec, ' ', 1, true)
  return string.sub(rec, 1, sp - 1), string.sub(rec, sp + 1)
end

-- close ends a pending order with the given status, writes its tombstone and,
-- for an expiry, appends the event to the log. The ZREM is the claim: it
-- succeeds once, so the event is appended once.
local function close(id, deadline, status)
  local created, meta = pendingFields(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('DEL', prefix .. 'order:' .. id)
  local rec = status .. ' ' .. created .. ' ' .. deadline .. ' ' .. now .. ' ' .. meta
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
      return 'pending', 'pending ' .. created .. ' ' .. d .. ' 0 ' .. meta
    end
    return 'closed', close(id, d, 'expired')
  end
  local rec = redis.call('GET', prefix .. 'closed:' .. id)
  if rec then return 'closed', rec end
  return 'missing', ''
end
`

// checkoutScript creates a pending order unless one with this id is pending.
// ARGV[3] id, ARGV[4] ttl ms, ARGV[5] metadata JSON (may be empty).
// Returns {'created' or 'exists', record, now}.
var checkoutScript = redis.NewScript(luaPrelude + `
local id = ARGV[3]
local state, rec = current(id)
if state == 'pending' then return {'exists', rec, now} end
local deadline = now + tonumber(ARGV[4])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('DEL', prefix .. 'closed:' .. id)
redis.call('ZADD', KEYS[1], deadline, id)
redis.call('HSET', KEYS[2], id, now .. ' ' .. ARGV[5])
redis.call('SET', prefix .. 'order:' .. id, '1', 'PX', ARGV[4])
-- A new earliest deadline: sweepers that sleep until a later one must wake.
if #first == 0 or deadline < tonumber(first[2]) then
  redis.call('PUBLISH', KEYS[4], deadline)
end
return {'created', 'pending ' .. now .. ' ' .. deadline .. ' 0 ' .. ARGV[5], now}
`)

// getScript reads an order, expiring it first if it is due, so that nobody
// sees a pending order past its deadline.
// ARGV[3] id. Returns {'pending', 'closed' or 'missing', record, now}.
var getScript = redis.NewScript(luaPrelude + `
local state, rec = current(ARGV[3])
return {state, rec, now}
`)

// finishScript completes or cancels a pending order that is not due.
// ARGV[3] id, ARGV[4] 'completed' or 'cancelled'.
// Returns {'ok', 'closed' or 'missing', record, now}: 'closed' carries the
// record of the order as it already was (expired first here if it was due).
var finishScript = redis.NewScript(luaPrelude + `
local id = ARGV[3]
local state, rec = current(id)
if state ~= 'pending' then return {state, rec, now} end
local d = redis.call('ZSCORE', KEYS[1], id)
return {'ok', close(id, d, ARGV[4]), now}
`)

// expireDueScript expires up to ARGV[3] due orders, oldest deadline first.
// Returns {expired count, now, next deadline or -1}: the sweeper sleeps until
// the next deadline by Redis's clock, not its own.
var expireDueScript = redis.NewScript(luaPrelude + `
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]), 'WITHSCORES')
for i = 1, #due, 2 do
  close(due[i], due[i + 1], 'expired')
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_deadline = -1
if #nxt > 0 then next_deadline = tonumber(nxt[2]) end
return {#due / 2, now, next_deadline}
`)
