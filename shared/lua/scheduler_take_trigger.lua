-- Pops one operator's request to fire a schedule, only for the current leader.
-- KEYS[1]: the scheduler lease
-- KEYS[2]: the list of requested triggers
-- ARGV[1]: the lease's value (owner and fencing token)
-- Returns: the request ('<schedule> <requested at ms>'), nil when none waits, -1 when not the leader.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return redis.call('LPOP', KEYS[2])
