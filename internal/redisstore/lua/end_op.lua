#!lua flags=allow-oom
-- This script records the end of an operation, with its final counts,
-- unless it ended already.
--
-- KEYS[1] -> the operation's hash
-- ARGV[1] -> state, ARGV[2] -> error, ARGV[3..6] -> matched, changed,
-- skipped, failed
--
-- Returns 1 when it recorded the end, 0 when the operation had ended.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'matched', ARGV[3], 'changed', ARGV[4],
  'skipped', ARGV[5], 'failed', ARGV[6], 'ended', now, 'updated', now)
redis.call('HDEL', KEYS[1], 'owner', 'lease')
return 1
