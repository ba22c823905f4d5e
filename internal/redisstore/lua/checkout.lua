#!lua
-- This script creates pending orders, each unless one with its id is
-- pending. Per order it reads what is there; the index, the pending hash
-- and the wake-up take one command for the batch.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> alarmGrace in ms: a new earliest deadline sets the alarm this
-- much after it
-- ARGV[4], ARGV[5], ARGV[6], ARGV[7] -> an order: its id, what it asks for
-- ("t<ttl ms>", or "a<deadline unix ms>"), the maximum ttl in ms (for a
-- deadline) and metadata JSON (empty for none); the next from ARGV[8] on,
-- and so on
--
-- Returns the batch scripts' reply with, for each order, the code
-- 'created' -> the order was created
-- 'exists'  -> an order with this id is pending (perhaps created earlier in
-- the batch); the record is that order's, with what its checkout asked for,
-- for the caller to tell a retry from another request
-- 'bad'     -> the deadline asked for is not after now or past the maximum
-- ttl; nothing was written
-- An order closed under this id, or due (it is expired first), is replaced.
-- needs: prelude batch

local grace = tonumber(ARGV[3])
local first = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
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
  if state == 'closed' then forget(id) end
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
  redis.call('ZADD', K[1], unpack(zadd))
  redis.call('HSET', K[2], unpack(hset))
  -- A new earliest deadline: sweepers that sleep until a later one must
  -- wake, and the alarm goes off after it should the wake-up be lost.
  if #first == 0 or soonest < tonumber(first[2]) then
    redis.call('PUBLISH', K[4], soonest)
    alarm(soonest, grace)
  end
end
return out
