-- ARGV[1]: the generation the caller's namespace was made in ('' for
-- none); a purge advances the tenant's, and a write of an earlier one is
-- refused, from whichever runner it comes.
local generation = table.remove(ARGV, 1)
if generation ~= '' and (redis.call('HGET', KEYS[1], 'g') or '0') ~= generation then
  return {'purged'}
end
local usage, buckets, index = KEYS[1], KEYS[2], KEYS[3]
local mode, expected = ARGV[1], ARGV[2]
local max_keys, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = redis.call('HMGET', usage, 'k', 'b')
local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
local function finish(reply)
  redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes))
  return reply
end
redis.call('SADD', buckets, ARGV[5])
for i = 4, #KEYS do
  local data, key, value = KEYS[i], ARGV[2 * i - 2], ARGV[2 * i - 1]
  local new_key, grow
  if mode == 'set' then
    if redis.call('EXISTS', data) == 1 then
      new_key, grow = 0, #value - redis.call('STRLEN', data)
    else
      new_key, grow = 1, #key + #value
    end
  else
    local old = redis.call('GET', data)
    if (mode == 'absent' and old) or (mode == 'equal' and old ~= expected) then
      return finish({'changed', old})
    end
    if old then new_key, grow = 0, #value - #old else new_key, grow = 1, #key + #value end
  end
  if new_key == 1 and keys + 1 > max_keys then return finish({'keys', keys}) end
  if grow > 0 and bytes + grow > max_bytes then return finish({'bytes', bytes, grow}) end
  redis.call('SET', data, value)
  if new_key == 1 then
    redis.call('ZADD', index, redis.call('HINCRBY', usage, 's', 1), key)
    keys = keys + 1
  end
  bytes = bytes + grow
end
return finish({'ok', keys, bytes})
