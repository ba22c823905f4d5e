#!lua flags=allow-oom
-- This script reads orders, expiring each first if it is due, so that nobody
-- sees a pending order past its deadline.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3], ARGV[4], ... -> the order ids
--
-- Returns the batch scripts' reply with, for each order, the code
-- 'pending' -> the order is pending
-- 'closed'  -> the order is closed (perhaps expired by this call)
-- 'missing' -> no order has this id, or it closed longer ago than retention
-- needs: prelude batch

for i = 3, #ARGV do answer(current, ARGV[i]) end
return out
