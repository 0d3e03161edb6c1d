-- Gives a token the entry it already holds, else the best waiting entry: the highest level with work
-- (every starve_every-th claim below critical goes to the level starving longest, once past
-- starve_after_ms), tenants taking turns within a level. Either way the claim's lease runs from now
-- and the entry counts one more attempt.
-- KEYS[1]: the queue's entries hash
-- KEYS[2]: its claims hash (token message id -> entry id)
-- KEYS[3]: its claim counter
-- KEYS[4]: its leases (sorted set token message id -> lease deadline, ms)
-- KEYS[5]: its attempts hash (entry id -> attempts started)
-- ARGV[1]: the key of a level's age set, '{level}' standing for the level
-- ARGV[2]: the key of a level's tenant ring, '{level}' standing for the level
-- ARGV[3]: the key of a tenant's list at a level, '{level}' and '{tenant}' standing for them
-- ARGV[4]: the token's message id
-- ARGV[5]: now (ms)
-- ARGV[6]: how many levels
-- ARGV[7]: starve_every (0: never)
-- ARGV[8]: starve_after_ms
-- ARGV[9]: the lease (ms)
-- Returns: {entry id, entry JSON, attempts so far including this one}, or nil when nothing waits.
local function fill(template, name, value)
  local at = string.find(template, name, 1, true)
  return string.sub(template, 1, at - 1) .. value .. string.sub(template, at + #name)
end
local now = tonumber(ARGV[5])
local function hold(id, entry)
  redis.call('HSET', KEYS[2], ARGV[4], id)
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[9]), ARGV[4])
  return {id, entry, redis.call('HINCRBY', KEYS[5], id, 1)}
end
local held = redis.call('HGET', KEYS[2], ARGV[4])
if held then
  local entry = redis.call('HGET', KEYS[1], held)
  if entry then return hold(held, entry) end
  redis.call('HDEL', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  return nil
end
local levels = tonumber(ARGV[6])
local oldest = {}
local best = nil
for level = 0, levels - 1 do
  local head = redis.call('ZRANGE', fill(ARGV[1], '{level}', level), 0, 0, 'WITHSCORES')
  if head[2] then
    oldest[level] = tonumber(head[2])
    if best == nil then best = level end
  end
end
if best == nil then return nil end
local every = tonumber(ARGV[7])
if best > 0 and every > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n % every == 0 then
    local starving, since = nil, now - tonumber(ARGV[8])
    for level = best + 1, levels - 1 do
      if oldest[level] and oldest[level] <= since and (starving == nil or oldest[level] < oldest[starving]) then
        starving = level
      end
    end
    if starving then best = starving end
  end
end
local ring = fill(ARGV[2], '{level}', best)
for _ = 1, redis.call('LLEN', ring) do
  local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  local tk = fill(fill(ARGV[3], '{level}', best), '{tenant}', tenant)
  local id = redis.call('LPOP', tk)
  if redis.call('LLEN', tk) == 0 then redis.call('LREM', ring, 1, tenant) end
  if id then
    redis.call('ZREM', fill(ARGV[1], '{level}', best), id)
    local entry = redis.call('HGET', KEYS[1], id)
    if entry then return hold(id, entry) end
  end
end
return nil
