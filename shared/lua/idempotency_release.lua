-- Frees an Idempotency-Key if this request still holds it.
-- KEYS[1]: the key's hash
-- ARGV[1]: the claim's token
-- Returns: 1 freed, 0 the claim is no longer this request's.
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
