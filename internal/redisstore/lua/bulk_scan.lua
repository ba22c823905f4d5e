#!lua flags=no-writes
-- This script reads a page of a partition's pending orders for an
-- operation's scan, from where the scan is.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> the operation id, ARGV[4] -> the page size (HSCAN's COUNT)
--
-- Returns {'scanned'} once the scan is through, else {cursor, next cursor,
-- id 1, record 1, ...}: the cursor the page began at and the one after it
-- ('0': the last page), and the pending orders of the page that are not due.
-- needs: prelude

local opKey = prefix .. 'op:' .. ARGV[3]
if redis.call('HGET', opKey, 'scanned') == '1' then return {'scanned'} end
local cursor = redis.call('HGET', opKey, 'cursor') or '0'
local r = redis.call('HSCAN', K[2], cursor, 'COUNT', tonumber(ARGV[4]))
local out = {cursor, r[1]}
local kv = r[2]
for i = 1, #kv, 2 do
  local d = redis.call('ZSCORE', K[1], kv[i])
  if d and tonumber(d) > now then
    local created, meta, n, asked = splitPending(kv[i + 1])
    out[#out + 1] = kv[i]
    out[#out + 1] = record('pending', created, d, 0, meta, n, asked)
  end
end
return out
