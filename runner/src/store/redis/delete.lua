-- Deletes each key (KEYS[3..], ARGV[3..] the keys themselves) of bucket
-- ARGV[2] and gives back what they held; answers the tenant's keys and
-- bytes after. KEYS: usage, index (for routing), data keys.
local generation = table.remove(ARGV, 1)
local usage = KEYS[1]
if stale_generation(usage, generation) then return {'purged'} end
local tag = ARGV[1]
local n = bucket_names(tag, ARGV[2])
local now = now_ms()
reap(tag, usage, now, REAP_ON_WRITE)
local keys_freed, bytes_freed = 0, 0
for i = 3, #KEYS do
  local data, key = KEYS[i], ARGV[i]
  local scheduled = settle(tag, usage, n, key, now)
  if redis.call('EXISTS', data) == 1 then
    bytes_freed = bytes_freed + #key + redis.call('STRLEN', data)
    keys_freed = keys_freed + 1
    unlink(n, key)
    schedule(tag, n, key, nil, 0, scheduled)
  end
end
if keys_freed > 0 then
  redis.call('HINCRBY', usage, 'k', string.format('%d', -keys_freed))
  redis.call('HINCRBY', usage, 'b', string.format('%d', -bytes_freed))
end
local held = redis.call('HMGET', usage, 'k', 'b')
return {tonumber(held[1] or 0), tonumber(held[2] or 0)}
