-- Claims an Idempotency-Key for a request, unless a record of it is there already.
-- KEYS[1]: the key's hash
-- ARGV[1]: the request's fingerprint
-- ARGV[2]: the claim's token
-- ARGV[3]: the claim's TTL (s)
-- Returns: the existing record's {fingerprint, status, headers, body} (status nil while in progress), or nil once claimed.
local found = redis.call('HMGET', KEYS[1], 'fingerprint', 'status', 'headers', 'body')
if found[1] then return found end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'token', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return false
