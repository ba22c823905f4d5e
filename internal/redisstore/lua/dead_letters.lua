#!lua flags=allow-oom
-- This script lists dead letters of one partition, after making dead
-- letters of its spent entries (buryLapsed).
--
-- KEYS[1] the partition's events stream, KEYS[2] its why hash of the group.
-- ARGV[1] group id, ARGV[2] '-' or '(<id>' to start after id, ARGV[3] most,
-- ARGV[4] ack deadline ms, ARGV[5] max deliveries.
--
-- Returns a list of {id, deliveries, fields, why record or empty}. The why
-- field of a dead letter whose event was trimmed goes.
-- needs: groups

local key, g, why = KEYS[1], ARGV[1], KEYS[2]
buryLapsed(key, g, tonumber(ARGV[4]), tonumber(ARGV[5]))
local out = {}
for _, e in ipairs(redis.call('XPENDING', key, g, ARGV[2], '+', tonumber(ARGV[3]), 'dead')) do
  local r = redis.call('XRANGE', key, e[1], e[1])
  if r[1] then
    out[#out + 1] = {e[1], e[4], r[1][2], redis.call('HGET', why, e[1]) or ''}
  else
    redis.call('HDEL', why, e[1])
  end
end
return out
