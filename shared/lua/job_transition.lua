-- Moves a job to a new state, only from a state that allows it.
-- KEYS[1]: the job's hash
-- ARGV[1]: the new state
-- ARGV[2]: the states it may move from (comma-separated)
-- ARGV[3]: 'guard' to refuse once the job's effect was published (cancellation), else ''
-- ARGV[4..]: field, value pairs to set with the state
-- Returns: 1 moved, 0 unknown job, -1 not allowed from the current state.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local allowed = ',' .. ARGV[2] .. ','
if not string.find(allowed, ',' .. state .. ',', 1, true) then return -1 end
if ARGV[3] == 'guard' and redis.call('HEXISTS', KEYS[1], 'published') == 1 then return -1 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] == 'running' and redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then
  redis.call('HSET', KEYS[1], 'started_at', redis.call('HGET', KEYS[1], 'updated_at'))
end
if ARGV[1] == 'queued' then
  redis.call('HSET', KEYS[1], 'attempts_base', redis.call('HGET', KEYS[1], 'attempts') or '0')
  redis.call('HDEL', KEYS[1], 'published', 'error', 'started_at', 'dead_letter', 'embedded', 'indexed')
end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'retention_s') or '0')
if ttl and ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
