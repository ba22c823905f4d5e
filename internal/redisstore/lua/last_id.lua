#!lua flags=no-writes
-- This script reads the id of the last entry ever added to a partition's
-- event stream, even if trimmed since, on the partition's master, which has
-- every event a replica may have shown a watcher.
--
-- KEYS[1] -> the partition's events stream
--
-- Returns the stream's last-generated-id, "0-0" when there is no stream
-- (nothing expired in this history yet).

if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
