-- The batch scripts (checkout, get, finish) each take the calls of many
-- orders of one partition (see batch.go), run them one after the other, in
-- the order given, and reply {now, expired here, caught up here, code 1,
-- record 1, code 2, record 2, ...}: now is Redis's clock in ms; the next two
-- count the orders the calls found due and expired themselves (caught up:
-- more than a second after their deadline), so that they are counted as the
-- sweeper's expirations are; then, for each call, a code saying what
-- happened and the order's record as the call leaves it (empty when
-- missing). One order's call that fails (a key of the wrong type) answers
-- the code 'error' with Redis's message as its record, and the others go
-- on, as they would have in scripts of their own.
--
-- batch.lua runs them: it holds the reply and a call of one order.

local out = {now, 0, 0}
-- answer runs f(...) as one order's call and appends its code and record
-- to the reply.
local function answer(f, ...)
  expired_here, caught_here = 0, 0
  local ok, code, rec = pcall(f, ...)
  if not ok then
    if type(code) == 'table' then code = code['err'] end
    code, rec = 'error', tostring(code)
  end
  out[2], out[3] = out[2] + expired_here, out[3] + caught_here
  out[#out + 1] = code
  out[#out + 1] = rec
end
