-- Counts one request in every window it draws on, only if every window admits it. Windows are fixed
-- and aligned to the epoch on Redis's clock, so every replica agrees.
-- KEYS[1]: the tenant's quota overrides
-- KEYS[2..]: one counter hash per window
-- ARGV[1..]: per window: the quota's field, the default quota, the window's length (s)
-- Returns: {admitted (1/0), then per window: quota, remaining, seconds until it resets}.
local now = tonumber(redis.call('TIME')[1])
local n = #KEYS - 1
local quota, start, used, length = {}, {}, {}, {}
local admitted = 1
for i = 1, n do
  local field = ARGV[3 * i - 2]
  local q = tonumber(redis.call('HGET', KEYS[1], field) or ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  local s = now - (now % w)
  local stored = redis.call('HMGET', KEYS[i + 1], 's', 'n')
  local u = 0
  if tonumber(stored[1]) == s then u = tonumber(stored[2]) or 0 end
  quota[i], start[i], used[i], length[i] = q, s, u, w
  if q > 0 and u >= q then admitted = 0 end
end
local out = {admitted}
for i = 1, n do
  if admitted == 1 and quota[i] > 0 then
    used[i] = used[i] + 1
    redis.call('HSET', KEYS[i + 1], 's', start[i], 'n', used[i])
    redis.call('EXPIRE', KEYS[i + 1], length[i])
  end
  table.insert(out, quota[i])
  table.insert(out, math.max(0, quota[i] - used[i]))
  table.insert(out, start[i] + length[i] - now)
end
return out
