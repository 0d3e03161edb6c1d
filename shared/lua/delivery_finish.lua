-- Records an attempt and the delivery's new state (a retry of a deleted endpoint's delivery fails
-- instead), tracks the endpoint's failing streak, and disables the endpoint when due.
-- KEYS[1]: the delivery's hash
-- KEYS[2]: its list of attempts
-- KEYS[3]: the endpoint's hash
-- KEYS[4]: the endpoint's queue
-- KEYS[5]: the endpoint's set of attempts in flight
-- KEYS[6]: the webhook schedule
-- KEYS[7]: the done counter of the current bucket
-- ARGV[1]: the lease
-- ARGV[2]: now (ms)
-- ARGV[3]: the outcome ('succeeded', 'retry', 'failed' or 'exhausted')
-- ARGV[4]: when the next attempt may start (ms)
-- ARGV[5]: the attempt's JSON
-- ARGV[6]: the answer's status ('' for none)
-- ARGV[7]: the error ('' for none)
-- ARGV[8]: the TTL (s)
-- ARGV[9]: how long an endpoint may fail before it is disabled (ms)
-- ARGV[10]: why to disable the endpoint now ('' = not now)
-- ARGV[11]: why, when it has been failing too long
-- ARGV[12]: the endpoint's id
-- ARGV[13]: how many attempts to keep
-- Returns: {1, newly disabled (0/1), why}, or {0} for a lease that is no longer current.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return {0} end
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[8])
local live = redis.call('EXISTS', KEYS[3]) == 1
local outcome = ARGV[3]
if outcome == 'retry' and not live then outcome = 'failed' end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZREM', KEYS[5], id)
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[13]), -1)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_ms', now, 'last_status', ARGV[6], 'last_error', ARGV[7], 'lease', '')
redis.call('HDEL', KEYS[1], 'begun')
redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], 120)
if outcome == 'retry' then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', ARGV[4])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[4]), id)
  redis.call('ZADD', KEYS[6], 'LT', tonumber(ARGV[4]), ARGV[12])
else
  redis.call('HSET', KEYS[1], 'state', outcome)
  redis.call('HDEL', KEYS[1], 'next_ms')
end
if not live then return {1, 0, ''} end
if redis.call('ZCARD', KEYS[4]) > 0 then redis.call('ZADD', KEYS[6], 'LT', now, ARGV[12]) end
if outcome == 'succeeded' then
  redis.call('HDEL', KEYS[3], 'failing_since_ms')
  return {1, 0, ''}
end
local since = tonumber(redis.call('HGET', KEYS[3], 'failing_since_ms') or '')
if not since then
  since = now
  redis.call('HSET', KEYS[3], 'failing_since_ms', now)
end
local reason = ARGV[10]
if reason == '' and now - since >= tonumber(ARGV[9]) then reason = ARGV[11] end
if reason ~= '' and redis.call('HGET', KEYS[3], 'disabled') ~= '1' then
  redis.call('HSET', KEYS[3], 'disabled', '1', 'disabled_reason', reason, 'disabled_ms', now)
  redis.call('ZREM', KEYS[6], ARGV[12])
  return {1, 1, reason}
end
return {1, 0, ''}
