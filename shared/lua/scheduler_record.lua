-- Records a schedule's run under the scheduler's fencing token: moves the schedule's cursor past the
-- tick and, unless the tick was handled already or is let pass, stores the run.
-- KEYS[1]: the scheduler lease
-- KEYS[2]: the schedule's hash
-- ARGV[1]: the lease's value (owner and fencing token)
-- ARGV[2]: the mode: 'fire' (a cron tick), 'manual' (an operator's trigger) or 'advance' (move the cursor only)
-- ARGV[3]: the tick (ms)
-- ARGV[4]: the new cursor (ms)
-- ARGV[5]: the run's id
-- ARGV[6]: when it fired (ms)
-- ARGV[7]: the fencing token
-- ARGV[8]: '1' for a catch-up run, else '0'
-- Returns: -1 stale token, 0 tick already handled, 1 recorded, 2 let pass (paused, or 'advance').
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local mode = ARGV[2]
if mode ~= 'manual' then
  local cursor = tonumber(redis.call('HGET', KEYS[2], 'cursor') or '-1')
  if mode == 'fire' and tonumber(ARGV[3]) <= cursor then return 0 end
  if tonumber(ARGV[4]) > cursor then redis.call('HSET', KEYS[2], 'cursor', ARGV[4]) end
  if mode == 'advance' or redis.call('HGET', KEYS[2], 'paused') == '1' then return 2 end
end
redis.call('HSET', KEYS[2], 'run_id', ARGV[5], 'scheduled_for', ARGV[3], 'fired_at', ARGV[6], 'token', ARGV[7],
  'catch_up', ARGV[8], 'manual', mode == 'manual' and '1' or '0', 'outcome', 'enqueued', 'detail', '')
redis.call('HDEL', KEYS[2], 'finished_at')
return 1
