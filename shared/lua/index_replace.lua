-- index_advance for a rollback: the document map is replaced whole and the write floor raised.
-- KEYS[1]: the collection's LATEST pointer
-- KEYS[2]: its document map
-- KEYS[3]: the job's hash (it may not exist)
-- KEYS[4]: the collection's write floor
-- ARGV[1]: the expected version ('' = none)
-- ARGV[2]: the new version
-- ARGV[3]: the new write floor
-- ARGV[4..]: document id, 'segment:seq' pairs
-- Returns: 1 published, 0 LATEST moved meanwhile, -1 the job was cancelled.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[3], 'state') == 'cancelled' then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[4], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'published', ARGV[2]) end
return 1
