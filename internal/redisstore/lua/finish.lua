#!lua flags=allow-oom
-- This script completes or cancels pending orders that are not due.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3], ARGV[4] -> an order: its id, and 'completed' or 'cancelled';
-- the next from ARGV[5] on, and so on
--
-- Returns the batch scripts' reply with, for each order, the code
-- 'ok'      -> the order is closed with the status asked for
-- 'closed'  -> the order was closed already (perhaps expired by this call,
-- being due); the record is the order as it already was
-- 'missing' -> no order has this id, or it closed longer ago than retention
-- needs: prelude batch

local function finish(id, to)
  -- A pending order before its deadline, the common case, is closed at
  -- once; current() sorts out the rest (due, closed, missing).
  local d = redis.call('ZSCORE', K[1], id)
  if d and tonumber(d) > now then return 'ok', close(id, d, to) end
  return current(id)
end
for i = 3, #ARGV, 2 do answer(finish, ARGV[i], ARGV[i + 1]) end
return out
