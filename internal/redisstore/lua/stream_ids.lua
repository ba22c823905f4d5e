-- stream_ids.lua compares stream ids in Lua, for the order scripts' trimming
-- and the consumer group scripts.

-- idLess compares two stream ids "<ms>-<seq>".
local function idLess(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if ma ~= mb then return ma < mb end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end

-- idAfter returns the stream id just after id "<ms>-<seq>": MINID keeps
-- the entry at its threshold, so a trim that is to drop id too passes this.
local function idAfter(id)
  local d = string.find(id, '-', 1, true)
  return string.sub(id, 1, d) .. (tonumber(string.sub(id, d + 1)) + 1)
end
