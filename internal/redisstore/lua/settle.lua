#!lua flags=allow-oom
-- This script acknowledges deliveries, or hands them back.
--
-- KEYS[1] the partition's events stream, KEYS[2] its why hash of the group.
-- ARGV[1] group id, ARGV[2] ack deadline ms, ARGV[3] 'ack', 'release', or
-- the nack's retry_after in ms, ARGV[4] the group's start on this partition, ARGV[5]
-- max deliveries, ARGV[6] the nack's reason; then pairs of event id and
-- attempt.
--
-- Returns one code a pair (see order.AckStatus): 0 done, 1 unknown (no
-- such event delivered to the group), 2 not in flight (acknowledged or
-- dead-lettered), 3 expired (past its ack deadline, or delivered again).
-- A nack of an event's last delivery makes it a dead letter, and an entry
-- found spent is made one. A release hands the entry back due at once with
-- its delivery count one lower: to back, or to redriven when that is 0
-- (no consumer has had it, as after a redrive).
-- needs: groups

local key, g, dl, start, maxd = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[4], tonumber(ARGV[5])
local why, reason = KEYS[2], ARGV[6]
local last
local res = {}
local owners = {}
for i = 7, #ARGV, 2 do
  local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
  local p = redis.call('XPENDING', key, g, id, id, 1)
  local st
  if #p == 0 then
    if not last then last = groupInfo(key, g)['last-delivered-id'] end
    if idLess(start, id) and not idLess(last, id) and #redis.call('XRANGE', key, id, id) > 0 then st = 2 else st = 1 end
  else
    local e = p[1]
    if e[2] == 'dead' then
      st = 2
    elseif spent(e, dl, maxd) then
      redis.call('XCLAIM', key, g, 'dead', 0, id, 'JUSTID')
      owners[e[2]] = true
      st = 2
    elseif tonumber(e[4]) ~= attempt or tonumber(e[3]) >= dl then
      st = 3
    else
      owners[e[2]] = true
      if ARGV[3] == 'ack' then
        redis.call('XACK', key, g, id)
        redis.call('HDEL', why, id)
      elseif ARGV[3] == 'release' then
        local n = tonumber(e[4]) - 1
        local to = 'back'
        if n <= 0 then to = 'redriven' end
        redis.call('XCLAIM', key, g, to, 0, id, 'IDLE', dl, 'RETRYCOUNT', math.max(n, 0), 'JUSTID')
      elseif tonumber(e[4]) >= maxd then
        noteNacked(why, id, e[4], nowMs(), reason)
        redis.call('XCLAIM', key, g, 'dead', 0, id, 'JUSTID')
      else
        noteNacked(why, id, e[4], nowMs(), reason)
        local retry = math.min(tonumber(ARGV[3]), dl)
        redis.call('XCLAIM', key, g, 'back', 0, id, 'IDLE', dl - retry, 'RETRYCOUNT', e[4], 'JUSTID')
      end
      st = 0
    end
  end
  res[#res + 1] = st
end
forgetEmpty(key, g, owners)
return res
