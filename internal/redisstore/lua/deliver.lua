#!lua flags=allow-oom
-- This script hands a consumer up to a number of events of one partition:
-- first the due redeliveries, then new events.
--
-- KEYS[1] the partition's events stream, KEYS[2] its why hash of the group.
-- ARGV[1] group id, ARGV[2] consumer, ARGV[3] most events, ARGV[4] ack
-- deadline ms, ARGV[5] max deliveries, ARGV[6] the most client consumers
-- that may hold deliveries, ARGV[7] OwnRedeliveryDelay in ms.
--
-- Returns a list of {id, attempt, fields}, or {'full', n} when the
-- consumer holds nothing, took no redelivery, and n other client
-- consumers hold deliveries, ARGV[6] or more. An event due again after its
-- last delivery goes to the dead consumer instead (JUSTID keeps its count).
-- A client consumer left holding nothing is deleted: only those that hold
-- deliveries are kept, so that the walk over them costs what is in flight,
-- not every name that ever pulled.
-- needs: groups

local key, g, c, why = KEYS[1], ARGV[1], ARGV[2], KEYS[2]
local want, dl, maxd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = nowMs()
local out = {}
local holders, mine = 0, 0
for _, ci in ipairs(redis.call('XINFO', 'CONSUMERS', key, g)) do
  local info = kv(ci)
  local name, pending = info['name'], tonumber(info['pending'])
  if name ~= 'dead' then
    local left = pending
    if pending > 0 and #out < want then
      local idle = dl
      if name == c then idle = dl + tonumber(ARGV[7]) end
      for _, e in ipairs(redis.call('XPENDING', key, g, 'IDLE', idle, '-', '+', want - #out, name)) do
        local id, count = e[1], tonumber(e[4])
        if count >= maxd then
          redis.call('XCLAIM', key, g, 'dead', 0, id, 'JUSTID')
          left = left - 1
        else
          local got = redis.call('XCLAIM', key, g, c, 0, id)
          if got[1] then
            out[#out + 1] = {got[1][1], count + 1, got[1][2]}
            noteDelivered(why, id, now)
          else
            redis.call('HDEL', why, id)
          end
          if name ~= c then left = left - 1 end
        end
      end
    end
    if name == c then
      mine = left
    elseif isClient(name) then
      if left <= 0 then
        redis.call('XGROUP', 'DELCONSUMER', key, g, name)
      else
        holders = holders + 1
      end
    end
  end
end
if #out == 0 and mine == 0 and holders >= tonumber(ARGV[6]) then
  return {'full', holders}
end
if #out < want then
  local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', want - #out, 'STREAMS', key, '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = {e[1], 1, e[2]}
      -- A first delivery: no record to keep anything of.
      redis.call('HSET', why, e[1], now .. ' ' .. now)
    end
  end
end
if #out == 0 and mine == 0 then
  redis.call('XGROUP', 'DELCONSUMER', key, g, c)
end
return out
