-- Queues an entry at the back of its tenant's turn at its level, unless an entry with its id is queued or held.
-- KEYS[1]: the queue's entries hash
-- ARGV[1]: the key prefix
-- ARGV[2]: the queue's name
-- ARGV[3]: the entry's id
-- ARGV[4]: its tenant
-- ARGV[5]: its level (0 critical .. 4 bulk)
-- ARGV[6]: the entry's JSON
-- ARGV[7]: now (ms)
-- Returns: 1 queued, 0 already there.
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 0 end
local base = ARGV[1] .. ':wq:' .. ARGV[2]
redis.call('HSET', KEYS[1], ARGV[3], ARGV[6])
local tk = base .. ':t:' .. ARGV[5] .. ':' .. ARGV[4]
if redis.call('RPUSH', tk, ARGV[3]) == 1 then
  redis.call('RPUSH', base .. ':ring:' .. ARGV[5], ARGV[4])
end
redis.call('ZADD', base .. ':age:' .. ARGV[5], tonumber(ARGV[7]), ARGV[3])
return 1
