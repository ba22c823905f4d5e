#!lua
-- This script gives a pending order that is not due a new deadline.
-- A deadline earlier than every other one wakes the sweepers and sets the
-- alarm, as a checkout's does.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> order id
-- ARGV[4] -> 'ttl': ARGV[5] is the new ttl in ms from now; 'at': ARGV[5] is
-- the new deadline in unix ms
-- ARGV[6] -> the deadline the caller expects the order to have in unix ms,
-- or '' for no check
-- ARGV[7] -> the maximum ttl in ms
-- ARGV[8] -> alarmGrace in ms
--
-- Returns {code, record, now, expired here, caught up here}: the batch
-- scripts' reply for one order (see batch.lua), with code
-- 'ok'       -> the order has its new deadline
-- 'mismatch' -> the order's deadline is not the expected one; unchanged
-- 'bad'      -> the new deadline is not after now or past the maximum ttl;
-- the record is the order, unchanged
-- 'closed'   -> the order is closed (perhaps expired by this call)
-- 'missing'  -> no order has this id, or it closed longer ago than retention
-- needs: prelude

local id = ARGV[3]
local state, rec = current(id)
if state ~= 'pending' then return {state, rec, now, expired_here, caught_here} end
local d = tonumber(redis.call('ZSCORE', K[1], id))
if ARGV[6] ~= '' and tonumber(ARGV[6]) ~= d then return {'mismatch', rec, now, 0, 0} end
local nd = tonumber(ARGV[5])
if ARGV[4] == 'ttl' then nd = now + nd end
if nd <= now or nd > now + tonumber(ARGV[7]) then return {'bad', rec, now, 0, 0} end
local created, meta, n, asked = pendingFields(id)
n = n + 1
local first = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', K[1], 'XX', nd, id)
redis.call('HSET', K[2], id, pendingValue(created, meta, n, asked))
if nd < tonumber(first[2]) then
  redis.call('PUBLISH', K[4], nd)
  alarm(nd, tonumber(ARGV[8]))
end
return {'ok', record('pending', created, nd, 0, meta, n, asked), now, 0, 0}
