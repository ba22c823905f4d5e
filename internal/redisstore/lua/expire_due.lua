#!lua flags=allow-oom
-- This script expires up to a batch of due orders, oldest deadline
-- first: the per-order work is only what cannot be shared (the tombstone and
-- the event), every other command takes the whole batch. It then sets the
-- partition's alarm after the earliest deadline left, or deletes it when
-- none is pending.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> batch size (at most a few thousand: the ids go through unpack)
-- ARGV[4] -> alarmGrace in ms
--
-- Returns {expired, now, next deadline, caught up}:
-- expired       -> how many orders it expired; the batch size means more
-- may be due
-- now           -> Redis's clock in ms: the sweeper sleeps until the next
-- deadline by Redis's clock, not its own
-- next deadline -> the earliest deadline left in ms, -1 when none is pending
-- caught up     -> how many of the expired orders it claimed more than a
-- second after their deadline
-- needs: prelude

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
  local x = tostring(now)
  local retained, tombs = {}, {}
  for i = 1, n do
    local id, d = ids[i], due[2 * i]
    local created, meta, rn = splitPending(recs[i])
    tombs[2 * i - 1], tombs[2 * i] = id, record('expired', created, d, x, meta, rn)
    redis.call('XADD', KEYS[3], '*', 'id', id, 'c', created, 'd', d, 'x', x, 'm', meta)
    if now - tonumber(d) > 1000 then caught = caught + 1 end
    retained[2 * i - 1], retained[2 * i] = d, id
  end
  -- The tombstones in one command: a key with a ttl each cost Redis about
  -- a quarter of the claim (see keys.go).
  redis.call('HSET', prefix .. 'expired', unpack(tombs))
  redis.call('ZADD', prefix .. 'retained', unpack(retained))
end
-- The index of closed orders loses them a retention after their deadline
-- (see keys.go).
redis.call('ZREMRANGEBYSCORE', prefix .. 'retained', '-inf', '(' .. (now - retention))
-- One trim for the batch instead of one per XADD, and one on every sweep
-- (a second apart at most) when nothing expired, so that a quiet log is
-- trimmed too.
if redis.call('EXISTS', KEYS[3]) == 1 then
  trimLog(trimHorizon(), 4 * tonumber(ARGV[3]))
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
