#!lua flags=allow-oom
-- This script expires up to a batch of due orders of a partition, oldest
-- deadline first, and sets the partition's alarm (see expire.lua).
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> batch size (at most a few thousand: the ids go through unpack)
-- ARGV[4] -> alarmGrace in ms
--
-- Returns {expired, now, next deadline, caught up}:
-- expired       -> how many orders it expired; the batch size means more
-- may be due
-- now           -> Redis's clock in ms: the sweeper sleeps until the next
-- deadline by Redis's clock, not its own
-- next deadline -> the earliest deadline left in ms, -1 when none is pending
-- caught up     -> how many of the expired orders it claimed more than a
-- second after their deadline
-- needs: expire

return {expirePartition(tonumber(ARGV[3]), tonumber(ARGV[4]))}
