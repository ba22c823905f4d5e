#!lua
-- This script records a group's settings unless it exists.
--
-- KEYS[1] groupsKey.
-- ARGV[1] group id, ARGV[2] ack deadline ms, ARGV[3] max deliveries,
-- ARGV[4] the most groups there may be, ARGV[5] the start position,
-- ARGV[6] the push settings ("" for none).
--
-- Returns {code, settings}: 'created' with the new settings, 'exists' with
-- the existing ones, 'full' when there are ARGV[4] groups already.

local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then return {'exists', cur} end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'full', ''} end
local t = redis.call('TIME')
local rec = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) .. ' ' .. ARGV[5]
if ARGV[6] ~= '' then rec = rec .. ' ' .. ARGV[6] end
redis.call('HSET', KEYS[1], ARGV[1], rec)
return {'created', rec}
