#!lua flags=allow-oom
-- This script takes or renews the lease of a running operation.
--
-- KEYS[1] -> the operation's hash
-- ARGV[1] -> the replica's owner id, ARGV[2] -> the lease in ms
--
-- Returns {'ok', spec} -> the replica holds the operation for the lease
-- {'done'}   -> it ended (or is gone)
-- {'cancel'} -> it was asked to stop: the replica is to end it
-- {'busy'}   -> another replica holds it

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return {'done'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
if owner and owner ~= ARGV[1] and lease > now then return {'busy'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[2]), 'updated', now)
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return {'cancel'} end
return {'ok', redis.call('HGET', KEYS[1], 'spec')}
