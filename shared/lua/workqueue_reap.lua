-- Takes back claims whose lease ran out (their worker died, or their token message was lost) and puts
-- their entries at the front of their level, ahead of every other waiting entry there, keeping their
-- original enqueue time. A claim without a lease counts as run out; one whose entry is gone is dropped.
-- KEYS[1]: the queue's entries hash
-- KEYS[2]: its claims hash (token message id -> entry id)
-- KEYS[3]: its leases (sorted set token message id -> lease deadline, ms)
-- ARGV[1]: the key of a level's age set, '{level}' standing for the level
-- ARGV[2]: the key of a level's tenant ring, '{level}' standing for the level
-- ARGV[3]: the key of a tenant's list at a level, '{level}' and '{tenant}' standing for them
-- ARGV[4]: now (ms)
-- ARGV[5]: one token's message id to take back whatever its lease, or '' for every run-out claim
-- Returns: the ids of the entries put back.
local function fill(template, name, value)
  local at = string.find(template, name, 1, true)
  return string.sub(template, 1, at - 1) .. value .. string.sub(template, at + #name)
end
local now = tonumber(ARGV[4])
local tokens = {}
if ARGV[5] ~= '' then
  tokens[1] = ARGV[5]
else
  for _, token in ipairs(redis.call('HKEYS', KEYS[2])) do
    local deadline = redis.call('ZSCORE', KEYS[3], token)
    if not deadline or tonumber(deadline) < now then tokens[#tokens + 1] = token end
  end
end
local back = {}
for _, token in ipairs(tokens) do
  local id = redis.call('HGET', KEYS[2], token)
  redis.call('HDEL', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  local raw = id and redis.call('HGET', KEYS[1], id)
  if raw then
    local entry = cjson.decode(raw)
    local level, tenant = tostring(entry['level']), entry['tenant']
    local age = fill(ARGV[1], '{level}', level)
    if not redis.call('ZSCORE', age, id) then
      redis.call('ZADD', age, tonumber(entry['enqueued_ms']), id)
      redis.call('LPUSH', fill(fill(ARGV[3], '{level}', level), '{tenant}', tenant), id)
      local ring = fill(ARGV[2], '{level}', level)
      redis.call('LREM', ring, 0, tenant)
      redis.call('LPUSH', ring, tenant)
      back[#back + 1] = id
    end
  end
end
return back
