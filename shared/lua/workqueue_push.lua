-- Queues an entry at the back of its tenant's turn at its level, unless an entry with its id is queued or held.
-- KEYS[1]: the queue's entries hash
-- ARGV[1]: the key of a level's age set, '{level}' standing for the level
-- ARGV[2]: the key of a level's tenant ring, '{level}' standing for the level
-- ARGV[3]: the key of a tenant's list at a level, '{level}' and '{tenant}' standing for them
-- ARGV[4]: the entry's id
-- ARGV[5]: its tenant
-- ARGV[6]: its level (0 critical .. 4 bulk)
-- ARGV[7]: the entry's JSON
-- ARGV[8]: now (ms)
-- Returns: 1 queued, 0 already there.
local function fill(template, name, value)
  local at = string.find(template, name, 1, true)
  return string.sub(template, 1, at - 1) .. value .. string.sub(template, at + #name)
end
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 0 end
local level, tenant = ARGV[6], ARGV[5]
redis.call('HSET', KEYS[1], ARGV[4], ARGV[7])
local tk = fill(fill(ARGV[3], '{level}', level), '{tenant}', tenant)
if redis.call('RPUSH', tk, ARGV[4]) == 1 then
  redis.call('RPUSH', fill(ARGV[2], '{level}', level), tenant)
end
redis.call('ZADD', fill(ARGV[1], '{level}', level), tonumber(ARGV[8]), ARGV[4])
return 1
