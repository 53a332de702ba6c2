-- ARGV[1]: the generation the caller's namespace was made in ('' for
-- none); a purge advances the tenant's, and a write of an earlier one is
-- refused, from whichever runner it comes.
local generation = table.remove(ARGV, 1)
if generation ~= '' and (redis.call('HGET', KEYS[1], 'g') or '0') ~= generation then
  return {'purged'}
end
local usage, buckets, index, data = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local old = redis.call('GET', data)
if old then
  if #old > 18 or not (old == '0' or string.match(old, '^%-?[1-9]%d*$')) then return {'slow'} end
  if ARGV[2] == 'u64' and string.sub(old, 1, 1) == '-' then return {'slow'} end
end
local sum = redis.pcall('INCRBY', data, ARGV[1])
if type(sum) == 'table' and sum.err then return {'slow'} end
local now = redis.call('GET', data)
local held = redis.call('HMGET', usage, 'k', 'b')
local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
local new_key, grow = 0, 0
if old then grow = #now - #old else new_key, grow = 1, #ARGV[6] + #now end
local refused
if new_key == 1 and keys + 1 > tonumber(ARGV[3]) then
  refused = {'keys', keys}
elseif grow > 0 and bytes + grow > tonumber(ARGV[4]) then
  refused = {'bytes', bytes, grow}
end
if refused then
  if old then redis.call('SET', data, old) else redis.call('DEL', data) end
  return refused
end
redis.call('SADD', buckets, ARGV[5])
if new_key == 1 then
  redis.call('ZADD', index, redis.call('HINCRBY', usage, 's', 1), ARGV[6])
end
keys, bytes = keys + new_key, bytes + grow
redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes))
return {'ok', keys, bytes, now}
