-- Reads the cursors of schedules (the last tick each handled).
-- KEYS[1..]: the schedules' hashes
-- ARGV: none
-- Returns: each schedule's cursor (ms), or false where it has none.
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], 'cursor') or false end
return out
