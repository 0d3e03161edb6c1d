-- Takes a waiting entry out of its queue (a claimed one stays: its worker must notice the cancellation).
-- KEYS[1]: the queue's entries hash
-- KEYS[2]: its attempts hash
-- ARGV[1]: the key of a level's age set, '{level}' standing for the level
-- ARGV[2]: the key of a level's tenant ring, '{level}' standing for the level
-- ARGV[3]: the key of a tenant's list at a level, '{level}' and '{tenant}' standing for them
-- ARGV[4]: the entry's id
-- Returns: 1 removed, 0 unknown, -1 claimed (in flight).
local function fill(template, name, value)
  local at = string.find(template, name, 1, true)
  return string.sub(template, 1, at - 1) .. value .. string.sub(template, at + #name)
end
local raw = redis.call('HGET', KEYS[1], ARGV[4])
if not raw then return 0 end
local entry = cjson.decode(raw)
local level = tostring(entry['level'])
local age = fill(ARGV[1], '{level}', level)
if not redis.call('ZSCORE', age, ARGV[4]) then return -1 end
redis.call('ZREM', age, ARGV[4])
local tk = fill(fill(ARGV[3], '{level}', level), '{tenant}', entry['tenant'])
redis.call('LREM', tk, 1, ARGV[4])
if redis.call('LLEN', tk) == 0 then redis.call('LREM', fill(ARGV[2], '{level}', level), 1, entry['tenant']) end
redis.call('HDEL', KEYS[1], ARGV[4])
redis.call('HDEL', KEYS[2], ARGV[4])
return 1
