-- Publishes a compaction's manifest: moves LATEST if it still points at the expected version and
-- records that the merged segments now live in the new one. The document map is not touched: its
-- entries keep naming the segments documents were written to, and readers follow the moves.
-- KEYS[1]: the collection's LATEST pointer
-- KEYS[2]: its segment moves (segment id -> the segment it was merged into)
-- ARGV[1]: the expected version
-- ARGV[2]: the new version
-- ARGV[3]: the merged segment's id
-- ARGV[4..]: the ids of the segments merged into it
-- Returns: 1 published, 0 LATEST moved meanwhile.
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
for i = 4, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[3]) end
return 1
