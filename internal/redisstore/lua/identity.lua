#!lua flags=allow-oom
-- This script reads the store's identity, the number of partitions and
-- the epoch, and records what is missing (see epoch.go). Both keys are in one
-- slot: the script is atomic on a Redis Cluster too.
--
-- KEYS[1] -> oe:partitions
-- KEYS[2] -> the epoch key
-- ARGV[1] -> the epoch the replica runs with, empty when it starts
-- ARGV[2] -> the number of partitions the replica runs with, or when it
-- starts the number it asks for; recorded if none is
-- ARGV[3] -> a new random epoch id, used if the store has no epoch
--
-- Returns {state, epoch, partitions}:
-- 'same'    -> the store has the epoch the replica runs with, or any epoch
-- when it starts
-- 'new'     -> the store had no epoch: it is new, or it was emptied; the
-- epoch returned was just recorded, and its history begins now (at 0 for a
-- store with partitions but no epoch seen at a start: one recorded before
-- epochs existed, whose history is whole)
-- 'changed' -> the store has an epoch other than the replica's; nothing was
-- written, and partitions is false when none is recorded
-- Partitions is recorded when missing, except in the 'changed' case.
--
-- Freeing, although it may write: it writes two short keys at most, and only
-- where they are missing, and a replica started, or renewing the store,
-- while Redis is over its maxmemory must still come up and expire what is
-- pending.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local parts = redis.call('GET', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
local state = 'same'
if not epoch then
  local since = now
  if ARGV[1] == '' and parts then since = 0 end
  epoch = ARGV[3] .. ' ' .. since
  redis.call('SET', KEYS[2], epoch)
  state = 'new'
elseif ARGV[1] ~= '' and epoch ~= ARGV[1] then
  return {'changed', epoch, parts}
end
if not parts then
  parts = ARGV[2]
  redis.call('SET', KEYS[1], parts)
end
return {state, epoch, parts}
