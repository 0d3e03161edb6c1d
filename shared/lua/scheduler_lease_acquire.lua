-- Takes the scheduler lease if it is free, with the next fencing token.
-- KEYS[1]: the scheduler lease
-- KEYS[2]: the fencing token counter
-- ARGV[1]: the owner
-- ARGV[2]: the lease's TTL (ms)
-- Returns: the new fencing token, or 0 when the lease is held.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
