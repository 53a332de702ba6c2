-- Adds ARGV[3] (an i64) to the decimal under KEYS[4] with INCRBY, when the
-- stored value is one INCRBY reads as `Delta::parse` does; answers `slow`
-- where it cannot. The sum does not expire. KEYS: usage, bucket set,
-- index, data.
local generation = table.remove(ARGV, 1)
local usage, buckets, data = KEYS[1], KEYS[2], KEYS[4]
if stale_generation(usage, generation) then return {'purged'} end
local tag, bucket, key = ARGV[1], ARGV[6], ARGV[7]
local n = bucket_names(tag, bucket)
local now = now_ms()
reap(tag, usage, now, REAP_ON_WRITE)
local scheduled = settle(tag, usage, n, key, now)
local old = redis.call('GET', data)
if old then
  if #old > 18 or not (old == '0' or string.match(old, '^%-?[1-9]%d*$')) then return {'slow'} end
  if ARGV[3] == 'u64' and string.sub(old, 1, 1) == '-' then return {'slow'} end
end
local sum = redis.pcall('INCRBY', data, ARGV[2])
if type(sum) == 'table' and sum.err then return {'slow'} end
local now_value = redis.call('GET', data)
local held = redis.call('HMGET', usage, 'k', 'b')
local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
local created, grow = not old, 0
if old then grow = #now_value - #old else grow = #key + #now_value end
local refused
if created and keys + 1 > tonumber(ARGV[4]) then
  refused = {'keys', keys}
elseif grow > 0 and bytes + grow > tonumber(ARGV[5]) then
  refused = {'bytes', bytes, grow}
end
if refused then
  -- KEEPTTL: a live expiry stays as it was.
  if old then
    redis.call('SET', data, old, 'KEEPTTL')
  else
    redis.call('DEL', data)
  end
  return refused
end
redis.call('SADD', buckets, bucket)
if scheduled then redis.call('PERSIST', data) end
stamp(usage, n, key, created)
schedule(tag, n, key, nil, 0, scheduled)
if created then keys = keys + 1 end
bytes = bytes + grow
redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes))
return {'ok', keys, bytes, now_value}
