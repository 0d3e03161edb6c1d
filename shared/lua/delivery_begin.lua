-- Begins the attempt a lease allows, once (a duplicated message finds it begun).
-- KEYS[1]: the delivery's hash
-- ARGV[1]: the lease
-- ARGV[2]: the prefix of endpoint keys
-- ARGV[3]: the prefix of event body keys
-- Returns: {delivery fields, endpoint fields, body}, fields in the order of the HMGETs below; false for a stale lease or an attempt already begun.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'begun') == ARGV[1] then
  return false
end
redis.call('HSET', KEYS[1], 'begun', ARGV[1])
local d = redis.call('HMGET', KEYS[1], 'id', 'tenant', 'endpoint_id', 'event_id', 'event_type', 'trigger', 'state',
  'attempts', 'round_start', 'created_ms', 'traceparent')
local e = redis.call('HMGET', ARGV[2] .. d[3], 'url', 'disabled', 'secrets', 'tenant')
return {d, e, redis.call('GET', ARGV[3] .. d[4])}
