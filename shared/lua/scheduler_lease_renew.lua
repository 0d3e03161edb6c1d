-- Extends the scheduler lease, only our own.
-- KEYS[1]: the scheduler lease
-- ARGV[1]: the value it holds while ours (owner and fencing token)
-- ARGV[2]: the lease's TTL (ms)
-- Returns: 1 extended, 0 not ours (it expired or another took it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
