-- Stores the event bodies not stored yet and indexes them per tenant for replay (dropping what is past
-- the TTL), creates the deliveries that do not exist yet, and queues them due now.
-- KEYS[1]: the webhook schedule
-- ARGV[1]: now (ms)
-- ARGV[2]: the TTL (s)
-- ARGV[3]: how many event bodies follow
-- ARGV[4]: the key of an event's body, '{}' standing for the event id
-- ARGV[5]: the key of a tenant's sent events, '{}' standing for the tenant
-- ARGV[6]: the key of a delivery, '{}' standing for its id
-- ARGV[7]: the key of an endpoint's queue, '{}' standing for the endpoint id
-- ARGV[8]: the key of an endpoint's delivery log, '{}' standing for the endpoint id
-- ARGV[9..]: per body: event id, tenant, time (ms), body; then per event's deliveries: tenant, event id, event type,
--   trigger, traceparent, how many deliveries n, then n pairs of delivery id and endpoint id
-- Returns: how many deliveries it created.
local function key(template, part)
  local at = string.find(template, '{}', 1, true)
  return string.sub(template, 1, at - 1) .. part .. string.sub(template, at + 2)
end
local now, ttl, bodies = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = now - ttl * 1000
local tenants = {}
local first = 9 + 4 * bodies
for i = 9, first - 1, 4 do
  local event, tenant = ARGV[i], ARGV[i + 1]
  redis.call('SET', key(ARGV[4], event), ARGV[i + 3], 'EX', ttl, 'NX')
  redis.call('ZADD', key(ARGV[5], tenant), ARGV[i + 2], event)
  tenants[tenant] = true
end
for tenant in pairs(tenants) do
  redis.call('ZREMRANGEBYSCORE', key(ARGV[5], tenant), '-inf', cutoff)
end
local created, touched = 0, {}
local i = first
while i <= #ARGV do
  local tenant, event, etype, trigger, trace = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local last = i + 5 + 2 * tonumber(ARGV[i + 5])
  for j = i + 6, last, 2 do
    local id, ep = ARGV[j], ARGV[j + 1]
    local dkey = key(ARGV[6], id)
    if redis.call('EXISTS', dkey) == 0 then
      redis.call('HSET', dkey, 'id', id, 'endpoint_id', ep, 'tenant', tenant, 'event_id', event, 'event_type', etype,
        'trigger', trigger, 'state', 'pending', 'attempts', 0, 'round_start', 0, 'created_ms', now, 'next_ms', now,
        'traceparent', trace)
      redis.call('EXPIRE', dkey, ttl)
      redis.call('ZADD', key(ARGV[7], ep), now, id)
      redis.call('ZADD', key(ARGV[8], ep), now, id)
      touched[ep] = true
      created = created + 1
    end
  end
  i = last + 1
end
-- Once per endpoint, not per delivery: trim its log, and have the dispatcher look at it now.
for ep in pairs(touched) do
  redis.call('ZREMRANGEBYSCORE', key(ARGV[8], ep), '-inf', cutoff)
  redis.call('ZADD', KEYS[1], 'LT', now, ep)
end
return created
