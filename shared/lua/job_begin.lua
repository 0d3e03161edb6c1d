-- Begins (or resumes) a stage of a job: it runs unless it was cancelled or is over. The job's attempts
-- become at least the stage's attempt number, counted on from the attempts before its last retry.
-- KEYS[1]: the job's hash
-- ARGV[1]: now (ISO time: updated_at, and started_at the first time)
-- ARGV[2]: the stage's attempt number (1 the first time its work runs)
-- Returns: 1 running (go ahead), 0 unknown job, -1 not to run (cancelled, or it already ended).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state ~= 'queued' and state ~= 'running' then return -1 end
redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then redis.call('HSET', KEYS[1], 'started_at', ARGV[1]) end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempts_base') or '0') + tonumber(ARGV[2])
if attempt > tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') then
  redis.call('HSET', KEYS[1], 'attempts', attempt)
end
local ttl = tonumber(redis.call('HGET', KEYS[1], 'retention_s') or '0')
if ttl and ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
