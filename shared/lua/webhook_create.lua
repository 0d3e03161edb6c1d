-- Stores a new webhook endpoint with the event stream's last entry id, atomically (no event can slip in between).
-- KEYS[1]: the endpoint's hash
-- KEYS[2]: the tenant's index of endpoints
-- KEYS[3]: the event stream
-- ARGV[1]: the creation time (ms)
-- ARGV[2]: the endpoint's id
-- ARGV[3..]: the endpoint's field, value pairs
-- Returns: the stream entry id the endpoint's events start after ('0-0' for an empty stream).
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local after = '0-0'
if last[1] then after = last[1][1] end
redis.call('HSET', KEYS[1], 'after_entry', after, unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return after
