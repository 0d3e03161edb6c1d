-- index_advance for a rollback: the document map is replaced whole (by the one written beside it in
-- chunks, so no single command walks the collection), the segment moves are cleared (every entry of
-- the new map names the segment holding its document) and the write floor raised.
-- KEYS[1]: the collection's LATEST pointer
-- KEYS[2]: its document map
-- KEYS[3]: the job's hash (it may not exist)
-- KEYS[4]: the collection's write floor
-- KEYS[5]: the new document map, written beforehand (it may not exist: an empty map)
-- KEYS[6]: the collection's segment moves
-- ARGV[1]: the expected version ('' = none)
-- ARGV[2]: the new version
-- ARGV[3]: the new write floor
-- Returns: 1 published, 0 LATEST moved meanwhile, -1 the job was cancelled.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[3], 'state') == 'cancelled' then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
-- UNLINK frees a large map in the background instead of blocking Redis while it is freed.
redis.call('UNLINK', KEYS[2], KEYS[6])
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('RENAME', KEYS[5], KEYS[2]) end
redis.call('SET', KEYS[4], ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HSET', KEYS[3], 'published', ARGV[2]) end
return 1
