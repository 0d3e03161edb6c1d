-- Gives a token the entry it already holds, else the best waiting entry: the highest level with work
-- (every starve_every-th claim below critical goes to the level starving longest, once past
-- starve_after_ms), tenants taking turns within a level.
-- KEYS[1]: the queue's entries hash
-- KEYS[2]: its claims hash (token message id -> entry id)
-- KEYS[3]: its claim counter
-- ARGV[1]: the key prefix
-- ARGV[2]: the queue's name
-- ARGV[3]: the token's message id
-- ARGV[4]: now (ms)
-- ARGV[5]: how many levels
-- ARGV[6]: starve_every (0: never)
-- ARGV[7]: starve_after_ms
-- Returns: {entry id, entry JSON}, or nil when nothing waits.
local held = redis.call('HGET', KEYS[2], ARGV[3])
if held then
  local entry = redis.call('HGET', KEYS[1], held)
  if entry then return {held, entry} end
  redis.call('HDEL', KEYS[2], ARGV[3])
  return nil
end
local base = ARGV[1] .. ':wq:' .. ARGV[2]
local now = tonumber(ARGV[4])
local levels = tonumber(ARGV[5])
local oldest = {}
local best = nil
for level = 0, levels - 1 do
  local head = redis.call('ZRANGE', base .. ':age:' .. level, 0, 0, 'WITHSCORES')
  if head[2] then
    oldest[level] = tonumber(head[2])
    if best == nil then best = level end
  end
end
if best == nil then return nil end
local every = tonumber(ARGV[6])
if best > 0 and every > 0 then
  local n = redis.call('INCR', KEYS[3])
  if n % every == 0 then
    local starving, since = nil, now - tonumber(ARGV[7])
    for level = best + 1, levels - 1 do
      if oldest[level] and oldest[level] <= since and (starving == nil or oldest[level] < oldest[starving]) then
        starving = level
      end
    end
    if starving then best = starving end
  end
end
local ring = base .. ':ring:' .. best
for _ = 1, redis.call('LLEN', ring) do
  local tenant = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  local tk = base .. ':t:' .. best .. ':' .. tenant
  local id = redis.call('LPOP', tk)
  if redis.call('LLEN', tk) == 0 then redis.call('LREM', ring, 1, tenant) end
  if id then
    redis.call('ZREM', base .. ':age:' .. best, id)
    local entry = redis.call('HGET', KEYS[1], id)
    if entry then
      redis.call('HSET', KEYS[2], ARGV[3], id)
      return {id, entry}
    end
  end
end
return nil
