-- Marks events seen by a consumer group, telling which were seen for the first time.
-- KEYS: none
-- ARGV[1]: the markers' key prefix
-- ARGV[2]: their TTL (s)
-- ARGV[3..]: the event ids
-- Returns: per event, 1 seen for the first time, 0 seen before.
local out = {}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('SET', ARGV[1] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) and 1 or 0
end
return out
