#!lua flags=no-writes
-- This script reads Redis's clock and the store's epoch for CheckCursor, on
-- the epoch key's master.
--
-- KEYS[1] -> the epoch key
--
-- Returns {now, epoch}: Redis's clock in ms, and the epoch or false when the
-- store has none (it was emptied).

local t = redis.call('TIME')
return {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), redis.call('GET', KEYS[1])}
