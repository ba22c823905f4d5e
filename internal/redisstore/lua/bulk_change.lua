#!lua
-- This script deals with a chunk of an operation's matched orders,
-- each in one step with its removal from the todo set and its count.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> the operation id
-- ARGV[4] -> the change: 'cancel', 'ttl', 'at' or 'shift'; ARGV[5] its
-- value in ms (a ttl, a unix ms deadline, a shift)
-- ARGV[6] -> the maximum ttl in ms, ARGV[7] -> alarmGrace in ms
-- ARGV[8], ARGV[9] -> an order: its id and the deadline it must still have
-- to be changed, or '-' to drop it as skipped (it no longer matches); and
-- so on
--
-- Returns {now, expired here, caught up here, id 1, record 1, ...}: the
-- orders whose deadline was not the one given, left in the todo set, with
-- their records, to be matched again.
-- needs: prelude

local opKey = prefix .. 'op:' .. ARGV[3]
local todo = opKey .. ':todo'
local mode, value = ARGV[4], tonumber(ARGV[5])
local maxTTL, grace = tonumber(ARGV[6]), tonumber(ARGV[7])
local changed, skipped, failed, expired, caught = 0, 0, 0, 0, 0
local moved = {}
local first = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
local soonest
for i = 8, #ARGV, 2 do
  local id, want = ARGV[i], ARGV[i + 1]
  if redis.call('ZSCORE', todo, id) then
    if want == '-' then
      redis.call('ZREM', todo, id)
      skipped = skipped + 1
    else
      expired_here, caught_here = 0, 0
      local state, rec = current(id)
      expired, caught = expired + expired_here, caught + caught_here
      if state ~= 'pending' then
        redis.call('ZREM', todo, id)
        skipped = skipped + 1
      else
        local d = tonumber(redis.call('ZSCORE', K[1], id))
        if d ~= tonumber(want) then
          moved[#moved + 1] = id
          moved[#moved + 1] = rec
        elseif mode == 'cancel' then
          close(id, d, 'cancelled')
          redis.call('ZREM', todo, id)
          changed = changed + 1
        else
          local nd = value
          if mode == 'ttl' then nd = now + value elseif mode == 'shift' then nd = d + value end
          redis.call('ZREM', todo, id)
          if nd <= now or nd > now + maxTTL then
            failed = failed + 1
          else
            local created, meta, n, asked = pendingFields(id)
            redis.call('ZADD', K[1], 'XX', nd, id)
            redis.call('HSET', K[2], id, pendingValue(created, meta, n + 1, asked))
            if not soonest or nd < soonest then soonest = nd end
            changed = changed + 1
          end
        end
      end
    end
  end
end
if changed > 0 then redis.call('HINCRBY', opKey, 'changed', changed) end
if skipped > 0 then redis.call('HINCRBY', opKey, 'skipped', skipped) end
if failed > 0 then redis.call('HINCRBY', opKey, 'failed', failed) end
if soonest and (#first == 0 or soonest < tonumber(first[2])) then
  redis.call('PUBLISH', K[4], soonest)
  alarm(soonest, grace)
end
local out = {now, expired, caught}
for _, v in ipairs(moved) do out[#out + 1] = v end
return out
