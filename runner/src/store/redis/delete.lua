-- ARGV[1]: the generation the caller's namespace was made in ('' for
-- none); a purge advances the tenant's, and a write of an earlier one is
-- refused, from whichever runner it comes.
local generation = table.remove(ARGV, 1)
if generation ~= '' and (redis.call('HGET', KEYS[1], 'g') or '0') ~= generation then
  return {'purged'}
end
local usage, index = KEYS[1], KEYS[2]
local keys_freed, bytes_freed = 0, 0
for i = 3, #KEYS do
  local data = KEYS[i]
  if redis.call('EXISTS', data) == 1 then
    local key = ARGV[i - 2]
    bytes_freed = bytes_freed + #key + redis.call('STRLEN', data)
    keys_freed = keys_freed + 1
    redis.call('DEL', data)
    redis.call('ZREM', index, key)
  end
end
if keys_freed > 0 then
  redis.call('HINCRBY', usage, 'k', string.format('%d', -keys_freed))
  redis.call('HINCRBY', usage, 'b', string.format('%d', -bytes_freed))
end
local held = redis.call('HMGET', usage, 'k', 'b')
return {tonumber(held[1] or 0), tonumber(held[2] or 0)}
