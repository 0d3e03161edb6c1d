-- Takes a waiting entry out of its queue (a claimed one stays: its worker must notice the cancellation).
-- KEYS[1]: the queue's entries hash
-- ARGV[1]: the key prefix
-- ARGV[2]: the queue's name
-- ARGV[3]: the entry's id
-- Returns: 1 removed, 0 unknown, -1 claimed (in flight).
local raw = redis.call('HGET', KEYS[1], ARGV[3])
if not raw then return 0 end
local entry = cjson.decode(raw)
local base = ARGV[1] .. ':wq:' .. ARGV[2]
local level = tostring(entry['level'])
if not redis.call('ZSCORE', base .. ':age:' .. level, ARGV[3]) then return -1 end
redis.call('ZREM', base .. ':age:' .. level, ARGV[3])
local tk = base .. ':t:' .. level .. ':' .. entry['tenant']
redis.call('LREM', tk, 1, ARGV[3])
if redis.call('LLEN', tk) == 0 then redis.call('LREM', base .. ':ring:' .. level, 1, entry['tenant']) end
redis.call('HDEL', KEYS[1], ARGV[3])
return 1
