-- Queues a delivery again at once, with a fresh retry budget.
-- KEYS[1]: the delivery's hash
-- KEYS[2]: the endpoint's queue
-- KEYS[3]: the webhook schedule
-- ARGV[1]: now (ms)
-- ARGV[2]: the endpoint's id
-- ARGV[3]: the TTL (s)
-- Returns: 1 queued, 0 no such delivery, -1 an attempt is under way.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == 'delivering' then return -1 end
local made = redis.call('HGET', KEYS[1], 'attempts')
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', ARGV[1], 'round_start', made)
redis.call('HDEL', KEYS[1], 'dead_letter')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[1]), redis.call('HGET', KEYS[1], 'id'))
redis.call('ZADD', KEYS[3], 'LT', tonumber(ARGV[1]), ARGV[2])
return 1
