-- Hands back a claim whose attempt was never made (shutdown, or the endpoint was disabled meanwhile): due again now.
-- KEYS[1]: the delivery's hash
-- KEYS[2]: the endpoint's queue
-- KEYS[3]: the endpoint's set of attempts in flight
-- KEYS[4]: the webhook schedule
-- ARGV[1]: the lease
-- ARGV[2]: now (ms)
-- ARGV[3]: the endpoint's id
-- Returns: 1 handed back, 0 the lease is no longer current.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), id)
redis.call('HSET', KEYS[1], 'state', 'pending', 'lease', '', 'next_ms', ARGV[2])
redis.call('HDEL', KEYS[1], 'begun')
redis.call('ZADD', KEYS[4], 'LT', tonumber(ARGV[2]), ARGV[3])
return 1
