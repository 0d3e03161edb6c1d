-- Stores the answer only while the claim is still this request's: a request that outlived its lock
-- must not overwrite the one that took the key over.
-- KEYS[1]: the key's hash
-- ARGV[1]: the claim's token
-- ARGV[2]: how long to keep the answer (s)
-- ARGV[3]: the answer's status
-- ARGV[4]: its headers (JSON)
-- ARGV[5]: its body
-- Returns: 1 stored, 0 the claim is no longer this request's.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'headers', ARGV[4], 'body', ARGV[5])
redis.call('HDEL', KEYS[1], 'token')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
