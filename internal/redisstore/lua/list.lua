#!lua flags=no-writes
-- This script reads the next entries of a partition's indexes, by deadline
-- then id, after a position: the deadline index of pending orders, the index
-- of retained closed orders (see keys.go), or both merged. Reading both in
-- one script keeps the partition's listing whole while orders close: an
-- order moves from one index to the other at the same place, and the next
-- read starts after the same position in both. The script finds the
-- position by rank, with a binary search among the entries of the
-- position's deadline, so that its cost is O(log n) for the position and
-- O(1) per entry read, however many orders the partition holds: never a
-- scan. Redis orders the members of one score by their bytes, as Go
-- compares strings; Lua's own comparison follows the locale, so bytesLess
-- compares instead.
--
-- KEYS, ARGV[1], ARGV[2]: see prelude.lua.
-- ARGV[3] -> 'pending', 'closed' or 'both': which indexes
-- ARGV[4] -> 'asc' or 'desc'
-- ARGV[5], ARGV[6] -> the position's deadline (ms) and id, both empty
-- for the start
-- ARGV[7], ARGV[8] -> the least and greatest deadline wanted, in ms, or
-- '-inf' and '+inf'
-- ARGV[9] -> the most entries to read
--
-- Returns {now, done, id 1, deadline 1, record 1, id 2, ...}: done is 1
-- when no entry within the deadlines follows the last one returned. A
-- record is 'pending ...' for a pending order, the tombstone for a closed
-- one, and empty for a closed order whose tombstone is gone (the index
-- keeps it until a retention after its deadline).
-- needs: prelude

local desc = ARGV[4] == 'desc'
local lo, hi, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])

local function bytesLess(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- below counts the entries of index before (d, id), and the entry (d, id)
-- itself when with is true.
local function below(index, d, id, with)
  local n = redis.call('ZCOUNT', index, '-inf', '(' .. d)
  local same = redis.call('ZCOUNT', index, d, d)
  local a, b = 0, same
  while a < b do
    local mid = math.floor((a + b) / 2)
    local m = redis.call('ZRANGE', index, n + mid, n + mid)[1]
    local past
    if with then past = bytesLess(id, m) else past = not bytesLess(m, id) end
    if past then b = mid else a = mid + 1 end
  end
  return n + a
end

-- read returns up to limit entries of index after the position, in the
-- order asked for and within the deadlines, as {id, deadline string,
-- deadline, pending}, and whether the index has no more.
local function read(index, pending)
  local rows, done = {}, false
  local raw
  if not desc then
    local start = redis.call('ZCOUNT', index, '-inf', '(' .. lo)
    if ARGV[5] ~= '' then start = math.max(start, below(index, ARGV[5], ARGV[6], true)) end
    raw = redis.call('ZRANGE', index, start, start + limit - 1, 'WITHSCORES')
  else
    local stop = redis.call('ZCOUNT', index, '-inf', hi) - 1
    if ARGV[5] ~= '' then stop = math.min(stop, below(index, ARGV[5], ARGV[6], false) - 1) end
    local first = math.max(0, stop - limit + 1)
    raw = {}
    if stop >= 0 then
      local r = redis.call('ZRANGE', index, first, stop, 'WITHSCORES')
      for i = #r - 1, 1, -2 do
        raw[#raw + 1] = r[i]
        raw[#raw + 1] = r[i + 1]
      end
    end
  end
  if #raw < 2 * limit then done = true end
  for i = 1, #raw, 2 do
    local v = tonumber(raw[i + 1])
    if (not desc and hi ~= '+inf' and v > tonumber(hi)) or (desc and lo ~= '-inf' and v < tonumber(lo)) then
      done = true
      break
    end
    rows[#rows + 1] = {raw[i], raw[i + 1], v, pending}
  end
  return rows, done
end

local function before(a, b)
  if a[3] ~= b[3] then
    if desc then return a[3] > b[3] end
    return a[3] < b[3]
  end
  if desc then return bytesLess(b[1], a[1]) end
  return bytesLess(a[1], b[1])
end

local rows, done = {}, true
if ARGV[3] ~= 'closed' then rows, done = read(K[1], true) end
if ARGV[3] ~= 'pending' then
  local c, cdone = read(prefix .. 'retained', false)
  if ARGV[3] == 'closed' then
    rows, done = c, cdone
  else
    -- Merge the two, and keep the first limit: the next read starts after
    -- the last one kept, in both indexes.
    local m, i, j = {}, 1, 1
    while #m < limit and (i <= #rows or j <= #c) do
      if j > #c or (i <= #rows and before(rows[i], c[j])) then
        m[#m + 1] = rows[i]
        i = i + 1
      else
        m[#m + 1] = c[j]
        j = j + 1
      end
    end
    done = done and cdone and i > #rows and j > #c
    rows = m
  end
end
local out = {now, 0}
if done then out[2] = 1 end
for _, r in ipairs(rows) do
  local rec
  if r[4] then
    local created, meta, n = pendingFields(r[1])
    rec = record('pending', created, r[2], 0, meta, n)
  else
    rec = tombstone(r[1]) or ''
  end
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = rec
end
return out
