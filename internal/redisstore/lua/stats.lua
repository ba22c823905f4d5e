#!lua flags=no-writes
-- This script reads a partition's counts at one instant. Nothing in it is
-- counted for the purpose but the completed and cancelled orders (the
-- counts hash, one HINCRBY in close): the pending orders are the deadline
-- index, the expirations the events stream's entries-added, which counts
-- every entry ever added, trimmed ones too.
--
-- KEYS[1] -> the partition's deadlines zset
-- KEYS[2] -> the partition's events stream
-- KEYS[3] -> the partition's counts hash
--
-- Returns {pending, next deadline in ms (-1 when none is pending), events
-- retained, expirations ever logged, completed, cancelled}.

local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local nxt = -1
if #first > 0 then nxt = tonumber(first[2]) end
local events, added = 0, 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'length' then events = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
local c = redis.call('HMGET', KEYS[3], 'completed', 'cancelled')
return {redis.call('ZCARD', KEYS[1]), nxt, events, added, tonumber(c[1]) or 0, tonumber(c[2]) or 0}
