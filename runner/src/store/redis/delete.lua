-- Deletes each key (KEYS[3..], ARGV[3..] the keys themselves) of bucket
-- ARGV[2] and gives back what they held; answers the tenant's keys and
-- bytes after. KEYS: usage, index (for routing), data keys.
local generation = table.remove(ARGV, 1)
local usage = KEYS[1]
if stale_generation(usage, generation) then return {'purged'} end
local tag = ARGV[1]
local head = head_of(ARGV[2])
local expiring = has_schedule(tag)
local now
local keys_freed, bytes_freed = 0, 0
if expiring then
  now = now_ms()
  keys_freed, bytes_freed = reap(tag, now, REAP_ON_WRITE)
end
for i = 3, #KEYS do
  local data, key = KEYS[i], ARGV[i]
  local scheduled = false
  if expiring then
    local k, b
    scheduled, k, b = settle(tag, head, key, now)
    keys_freed, bytes_freed = keys_freed + k, bytes_freed + b
  end
  local size = size_of(data)
  if size then
    bytes_freed = bytes_freed + #key + size
    keys_freed = keys_freed + 1
    unlink(tag, head, key)
    if scheduled then schedule(tag, head, key, nil, 0, true) end
  end
end
if keys_freed > 0 then
  redis.call('HINCRBY', usage, 'k', string.format('%d', -keys_freed))
  redis.call('HINCRBY', usage, 'b', string.format('%d', -bytes_freed))
end
local held = redis.call('HMGET', usage, 'k', 'b')
return {tonumber(held[1] or 0), tonumber(held[2] or 0)}
