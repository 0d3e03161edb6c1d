-- Records how a schedule's run is going, unless a newer run was fired since.
-- KEYS[1]: the schedule's hash
-- ARGV[1]: the run's id
-- ARGV[2]: its outcome
-- ARGV[3]: the detail
-- ARGV[4]: when it finished (ms; '' leaves finished_at unset)
-- Returns: 1 recorded, 0 not the schedule's current run.
if redis.call('HGET', KEYS[1], 'run_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'outcome', ARGV[2], 'detail', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'finished_at', ARGV[4]) end
return 1
