#!lua flags=allow-oom
-- This script hands dead letters of one partition back to the redriven
-- consumer, after making dead letters of its spent entries (buryLapsed).
--
-- KEYS[1] the partition's events stream, KEYS[2] its why hash of the group.
-- ARGV[1] group id, ARGV[2] ack deadline ms, ARGV[3] most, ARGV[4] max
-- deliveries, then the ids; none: the first ARGV[3] dead letters.
--
-- Returns how many it handed back.
-- needs: groups

local key, g, dl = KEYS[1], ARGV[1], tonumber(ARGV[2])
buryLapsed(key, g, dl, tonumber(ARGV[4]))
local ids = {}
if #ARGV > 4 then
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  for _, e in ipairs(redis.call('XPENDING', key, g, '-', '+', tonumber(ARGV[3]), 'dead')) do ids[#ids + 1] = e[1] end
end
local n = 0
for _, id in ipairs(ids) do
  local p = redis.call('XPENDING', key, g, id, id, 1)
  if p[1] and p[1][2] == 'dead' then
    redis.call('XCLAIM', key, g, 'redriven', 0, id, 'IDLE', dl, 'RETRYCOUNT', 0, 'JUSTID')
    redis.call('HDEL', KEYS[2], id)
    n = n + 1
  end
end
return n
