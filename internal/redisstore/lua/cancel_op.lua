#!lua flags=allow-oom
-- This script asks a running operation to stop; the replica working it
-- stops before its next chunk and records it cancelled with its counts.
--
-- KEYS[1] -> the operation's hash
--
-- Returns 'missing', or the operation's state.

local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return st
