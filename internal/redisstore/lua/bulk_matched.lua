#!lua
-- This script keeps the matched orders of a scanned page in the todo
-- set and moves the scan on, if the scan is still where the page began.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> the operation id, ARGV[4] -> the cursor the page began at,
-- ARGV[5] -> the next cursor ('0': the scan is through)
-- ARGV[6], ARGV[7] -> a matched order: its id and deadline; and so on
--
-- Returns {added}: how many orders it added (none when another replica
-- moved the scan on first).
-- needs: prelude

local opKey = prefix .. 'op:' .. ARGV[3]
local todo = opKey .. ':todo'
if redis.call('HGET', opKey, 'scanned') == '1' then return {0} end
if (redis.call('HGET', opKey, 'cursor') or '0') ~= ARGV[4] then return {0} end
local added = 0
for i = 6, #ARGV, 2 do
  added = added + redis.call('ZADD', todo, 'NX', ARGV[i + 1], ARGV[i])
end
redis.call('HINCRBY', opKey, 'matched', added)
if ARGV[5] == '0' then
  redis.call('HSET', opKey, 'scanned', '1', 'cursor', '0')
else
  redis.call('HSET', opKey, 'cursor', ARGV[5])
end
return {added}
