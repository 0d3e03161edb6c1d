-- Puts back an endpoint's deliveries whose lease ran out, then claims due deliveries while the endpoint
-- (which must exist and be enabled) has free slots, and reschedules the endpoint. An endpoint whose last
-- attempt failed gets the smaller concurrency until an attempt succeeds again, so dead endpoints hold
-- few of the process's slots.
-- KEYS[1]: the endpoint's hash
-- KEYS[2]: its queue of waiting deliveries
-- KEYS[3]: its set of attempts in flight
-- KEYS[4]: the webhook schedule
-- ARGV[1]: the endpoint's id
-- ARGV[2]: now (ms)
-- ARGV[3]: the concurrency
-- ARGV[4]: the lease (ms)
-- ARGV[5]: the most deliveries to claim
-- ARGV[6]: the prefix of the leases handed out
-- ARGV[7]: the prefix of delivery keys
-- ARGV[8]: the concurrency while the endpoint is failing
-- Returns: {delivery id, lease, delivery id, lease, ...}.
local now, concurrency = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'failing_since_ms') == 1 then
  concurrency = math.min(concurrency, tonumber(ARGV[8]))
end
local dprefix = ARGV[7]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[3], id)
  if redis.call('EXISTS', dprefix .. id) == 1 then
    redis.call('HSET', dprefix .. id, 'state', 'pending', 'lease', '', 'next_ms', now)
    redis.call('ZADD', KEYS[2], now, id)
  end
end
local out = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return out
end
if redis.call('HGET', KEYS[1], 'disabled') == '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return out
end
local want = math.min(concurrency - redis.call('ZCARD', KEYS[3]), tonumber(ARGV[5]))
if want > 0 then
  for i, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, want)) do
    redis.call('ZREM', KEYS[2], id)
    local dkey = dprefix .. id
    if redis.call('EXISTS', dkey) == 1 then
      local lease = ARGV[6] .. i
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), id)
      redis.call('HSET', dkey, 'state', 'delivering', 'lease', lease)
      out[#out + 1] = id
      out[#out + 1] = lease
    end
  end
end
local nxt = nil
local head = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if head[2] and redis.call('ZCARD', KEYS[3]) < concurrency then nxt = tonumber(head[2]) end
local held = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if held[2] and (nxt == nil or tonumber(held[2]) < nxt) then nxt = tonumber(held[2]) end
if nxt then redis.call('ZADD', KEYS[4], nxt, ARGV[1]) else redis.call('ZREM', KEYS[4], ARGV[1]) end
return out
