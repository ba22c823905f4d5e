#!lua flags=allow-oom,allow-cross-slot-keys
-- This script does what expire_due.lua does for several partitions that one
-- Redis Cluster master holds, in one call (see claims.go): the first is the
-- partition of KEYS, the others are named by their key prefixes. Their keys
-- are in other slots, which allow-cross-slot-keys lets a script touch when
-- this master serves them.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3], ARGV[4] -> as for expire_due.lua, for each partition
-- ARGV[5]...       -> the key prefixes of the other partitions ("oe:{7}:")
--
-- Returns expire_due.lua's four numbers for each partition, in the order
-- named, or {-1, now, -1, 0} for a partition whose slot this master does not
-- serve now, or serves only in part while it moves (a failover or a
-- resharding since the service grouped the partitions by master): nothing
-- of it was read or written, and the service claims it in a call of its
-- own, which follows the slot.
-- needs: expire

local batch, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {expirePartition(batch, grace)}
for i = 5, #ARGV do
  usePartition(ARGV[i])
  -- The keys that expire_due.lua declares: Redis refuses a script a key of
  -- a slot that is elsewhere or moving, as it would the declared ones.
  local here = redis.pcall('EXISTS', K[1], K[2], K[3], K[4])
  local n, at, nxt, caught = -1, now, -1, 0
  if type(here) == 'number' then
    n, at, nxt, caught = expirePartition(batch, grace)
  end
  out[#out + 1], out[#out + 2], out[#out + 3], out[#out + 4] = n, at, nxt, caught
end
return out
