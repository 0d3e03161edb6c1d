-- Finishes a token's claim: forgets the claim, its lease and its entry, and counts the entry done.
-- KEYS[1]: the queue's entries hash
-- KEYS[2]: its claims hash
-- KEYS[3]: its leases
-- KEYS[4]: its attempts hash
-- ARGV[1]: the token's message id
-- ARGV[2]: the done counter of the current bucket (a key)
-- ARGV[3]: that counter's TTL (s)
-- Returns: 1 released, 0 the token held nothing.
redis.call('ZREM', KEYS[3], ARGV[1])
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[4], id)
redis.call('INCR', ARGV[2])
redis.call('EXPIRE', ARGV[2], tonumber(ARGV[3]))
return 1
