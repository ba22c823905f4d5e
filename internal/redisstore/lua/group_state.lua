#!lua flags=allow-oom
-- This script reads a group's state on one partition, after making
-- dead letters of its spent entries (buryLapsed).
--
-- KEYS[1] the partition's events stream.
-- ARGV[1] group id, ARGV[2] ack deadline ms, ARGV[3] max deliveries.
--
-- Returns {last delivered id, backlog, in flight, dead letters, when the
-- oldest unacknowledged event was logged (its x field, in ms) or ''}, or
-- false when the group is missing here. The redriven events are backlog.
-- needs: groups

local key, g = KEYS[1], ARGV[1]
local info = groupInfo(key, g)
if not info then return false end
buryLapsed(key, g, tonumber(ARGV[2]), tonumber(ARGV[3]))
local last = info['last-delivered-id']
local sum = redis.call('XPENDING', key, g)
local dead, redriven, oldest = 0, 0, nil
if tonumber(sum[1]) > 0 then
  for _, cc in ipairs(sum[4]) do
    if cc[1] == 'dead' then
      dead = tonumber(cc[2])
    else
      if cc[1] == 'redriven' then redriven = tonumber(cc[2]) end
      local e = redis.call('XPENDING', key, g, '-', '+', 1, cc[1])
      if e[1] and (not oldest or idLess(e[1][1], oldest)) then oldest = e[1][1] end
    end
  end
end
local nxt = redis.call('XRANGE', key, '(' .. last, '+', 'COUNT', 1)
if nxt[1] and (not oldest or idLess(nxt[1][1], oldest)) then oldest = nxt[1][1] end
-- lag is unknown (nil) for a group created at an arbitrary id: count.
local backlog = info['lag']
if not backlog then backlog = #redis.call('XRANGE', key, '(' .. last, '+') end
local logged = ''
if oldest then
  local r = redis.call('XRANGE', key, oldest, oldest)
  if r[1] then logged = kv(r[1][2])['x'] end
end
return {last, backlog + redriven, tonumber(sum[1]) - dead - redriven, dead, logged}
