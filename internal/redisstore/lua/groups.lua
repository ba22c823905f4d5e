-- groups.lua has the helpers of the group scripts.
-- needs: stream_ids

-- kv turns a flat array of names and values (XINFO's replies) into a table.
local function kv(a)
  local t = {}
  for i = 1, #a, 2 do t[a[i]] = a[i + 1] end
  return t
end

-- groupInfo returns the XINFO GROUPS fields of group g on stream key, or nil.
local function groupInfo(key, g)
  for _, gi in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local t = kv(gi)
    if t['name'] == g then return t end
  end
  return nil
end

-- nowMs is Redis's clock in ms.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- whyTimes reads the first and last delivery times of entry id from the
-- why hash, or nil.
local function whyTimes(why, id)
  local cur = redis.call('HGET', why, id)
  if not cur then return nil end
  return string.match(cur, '^(%d+) (%d+)')
end

-- noteDelivered records a redelivery of entry id at ms now, keeping the
-- first delivery's time and the last nack.
local function noteDelivered(why, id, now)
  local cur = redis.call('HGET', why, id)
  local first, rest = now, ''
  if cur then
    local f, r = string.match(cur, '^(%d+) %d+(.*)$')
    if f then first, rest = f, r end
  end
  redis.call('HSET', why, id, first .. ' ' .. now .. rest)
end

-- noteNacked records that attempt n of entry id was nacked at now.
local function noteNacked(why, id, n, now, reason)
  local first, last = whyTimes(why, id)
  if not first then first, last = now, now end
  redis.call('HSET', why, id, first .. ' ' .. last .. ' ' .. n .. ' ' .. now .. ' ' .. reason)
end

-- isClient says whether a consumer name is a client's ("c:<name>"), not one
-- of the store's own.
local function isClient(name)
  return string.sub(name, 1, 2) == 'c:'
end

-- spent says whether a pending entry {id, consumer, idle, count} is a
-- client's delivery that was the event's last (count maxd) and whose ack
-- deadline dl passed: the event is a dead letter then.
local function spent(e, dl, maxd)
  return isClient(e[2]) and tonumber(e[4]) >= maxd and tonumber(e[3]) >= dl
end

-- forgetEmpty deletes the client consumers of a set (name -> true) that
-- hold nothing: a consumer is kept only while it holds deliveries.
local function forgetEmpty(key, g, names)
  for name in pairs(names) do
    if isClient(name) and #redis.call('XPENDING', key, g, '-', '+', 1, name) == 0 then
      redis.call('XGROUP', 'DELCONSUMER', key, g, name)
    end
  end
end

-- buryLapsed gives the dead consumer every spent entry of group g (JUSTID
-- keeps its count), and deletes the client consumers left holding nothing.
local function buryLapsed(key, g, dl, maxd)
  for _, ci in ipairs(redis.call('XINFO', 'CONSUMERS', key, g)) do
    local info = kv(ci)
    local name, pending = info['name'], tonumber(info['pending'])
    if isClient(name) then
      local left = pending
      if pending > 0 then
        for _, e in ipairs(redis.call('XPENDING', key, g, 'IDLE', dl, '-', '+', pending, name)) do
          if spent(e, dl, maxd) then
            redis.call('XCLAIM', key, g, 'dead', 0, e[1], 'JUSTID')
            left = left - 1
          end
        end
      end
      if left <= 0 then redis.call('XGROUP', 'DELCONSUMER', key, g, name) end
    end
  end
end
