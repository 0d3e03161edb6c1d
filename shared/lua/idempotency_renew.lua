-- Extends an Idempotency-Key's claim while its request still runs, if this request still holds it.
-- KEYS[1]: the key's hash
-- ARGV[1]: the claim's token
-- ARGV[2]: the claim's TTL from now (s)
-- Returns: 1 extended, 0 the claim is no longer this request's (or its answer is stored).
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
