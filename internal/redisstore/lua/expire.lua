-- expire.lua is the sweeper's claim of a partition's due orders, for
-- expire_due.lua (one partition) and expire_many.lua (several of one
-- master).
-- needs: prelude

-- trimEvery is how often, in ms, a partition's claims trim its log and its
-- index of closed orders (see expirePartition).
local trimEvery = 1000

-- expirePartition expires up to batch due orders of the partition that K
-- names, oldest deadline first: the per-order work is only what cannot be
-- shared (the tombstone and the event), every other command takes the whole
-- batch. It then sets the partition's alarm grace ms after the earliest
-- deadline left, or deletes it when none is pending. It returns what
-- expire_due.lua does.
local function expirePartition(batch, grace)
  local due = redis.call('ZRANGE', K[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, batch, 'WITHSCORES')
  local n = #due / 2
  local caught = 0
  if n > 0 then
    local ids = {}
    for i = 1, n do
      ids[i] = due[2 * i - 1]
    end
    -- The claim. The due orders are the first n of the index by rank, so
    -- removing ranks 0..n-1 removes exactly them; the script is atomic, so no
    -- other replica can have claimed one of them meanwhile.
    redis.call('ZREMRANGEBYRANK', K[1], 0, n - 1)
    local recs = redis.call('HMGET', K[2], unpack(ids))
    redis.call('HDEL', K[2], unpack(ids))
    local x = tostring(now)
    local retained, tombs = {}, {}
    for i = 1, n do
      local id, d = ids[i], due[2 * i]
      local created, meta, rn = splitPending(recs[i])
      tombs[2 * i - 1], tombs[2 * i] = id, record('expired', created, d, x, meta, rn)
      redis.call('XADD', K[3], '*', 'id', id, 'c', created, 'd', d, 'x', x, 'm', meta)
      if now - tonumber(d) > 1000 then caught = caught + 1 end
      retained[2 * i - 1], retained[2 * i] = d, id
    end
    -- The tombstones in one command: a key with a ttl each cost Redis about
    -- a quarter of the claim (see keys.go).
    redis.call('HSET', prefix .. 'expired', unpack(tombs))
    redis.call('ZADD', prefix .. 'retained', unpack(retained))
  end
  -- The trims. A claim that expired orders trims at most once a trimEvery
  -- a partition, whoever claims (the trimmed key marks one), not every
  -- time: a claim of one order, as on a cluster's 64 partitions, spent a
  -- fifth of its Redis time on trims that found nothing to drop
  -- (BenchmarkExpireDue). A sweep that expired nothing trims every time
  -- and writes no mark, so that an idle store writes nothing (a quiet
  -- partition is swept every second or so). A trim that stopped at its
  -- limit clears the mark, so that the next claim goes on with it.
  if n == 0 or redis.call('SET', prefix .. 'trimmed', '1', 'NX', 'PX', trimEvery) then
    -- The index of closed orders loses them a retention after their
    -- deadline (see keys.go).
    redis.call('ZREMRANGEBYSCORE', prefix .. 'retained', '-inf', '(' .. (now - retention))
    if redis.call('EXISTS', K[3]) == 1 and trimLog(trimHorizon(), 4 * batch) then
      redis.call('DEL', prefix .. 'trimmed')
    end
  end
  local nxt = redis.call('ZRANGE', K[1], 0, 0, 'WITHSCORES')
  local next_deadline = -1
  if #nxt > 0 then
    next_deadline = tonumber(nxt[2])
    alarm(next_deadline, grace)
  else
    alarm(nil)
  end
  return n, now, next_deadline, caught
end
