-- Deletes the scheduler lease, only our own (a clean stop hands over at once).
-- KEYS[1]: the scheduler lease
-- ARGV[1]: the value it holds while ours (owner and fencing token)
-- Returns: 1 deleted, 0 not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
