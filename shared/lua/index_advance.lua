-- Publishes a collection's next manifest: moves LATEST if it still points at the expected version and
-- updates the document map. A cancelled job publishes nothing; otherwise the job is marked published in
-- the same step, so a cancellation can no longer win after this.
-- KEYS[1]: the collection's LATEST pointer
-- KEYS[2]: its document map
-- KEYS[3]: the job's hash (it may not exist)
-- ARGV[1]: the expected version ('' = none)
-- ARGV[2]: the new version
-- ARGV[3..]: document id, 'segment:seq' pairs
-- Returns: 1 published, 0 LATEST moved meanwhile, -1 the job was cancelled.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[3], 'state') == 'cancelled' then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'published', ARGV[2]) end
return 1
