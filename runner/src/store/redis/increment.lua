-- Adds ARGV[3] (an i64) to the decimal under KEYS[4] with INCRBY, when the
-- stored value is one INCRBY reads as `Delta::parse` does; answers `slow`
-- where it cannot. The sum does not expire. KEYS: usage, bucket set,
-- index, data.
local generation = table.remove(ARGV, 1)
local usage, buckets, data = KEYS[1], KEYS[2], KEYS[4]
if stale_generation(usage, generation) then return {'purged'} end
local tag, bucket, key = ARGV[1], ARGV[6], ARGV[7]
local head = head_of(bucket)
local held = redis.call('HMGET', usage, 'k', 'b')
local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
local scheduled = false
if has_schedule(tag) then
  local now = now_ms()
  local k, b = reap(tag, now, REAP_ON_WRITE)
  local k2, b2
  scheduled, k2, b2 = settle(tag, head, key, now)
  keys, bytes = keys - k - k2, bytes - b - b2
end
local function finish(reply)
  redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes))
  return reply
end
local old = redis.call('GET', data)
if old then
  if #old > 18 or not (old == '0' or string.match(old, '^%-?[1-9]%d*$')) then return finish({'slow'}) end
  if ARGV[3] == 'u64' and string.sub(old, 1, 1) == '-' then return finish({'slow'}) end
end
local sum = redis.pcall('INCRBY', data, ARGV[2])
if type(sum) == 'table' and sum.err then return finish({'slow'}) end
local now_value = redis.call('GET', data)
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
  return finish(refused)
end
redis.call('SADD', buckets, bucket)
if scheduled then
  redis.call('PERSIST', data)
  schedule(tag, head, key, nil, 0, true)
end
stamp(tag, usage, head, key, created)
if created then keys = keys + 1 end
bytes = bytes + grow
return finish({'ok', keys, bytes, now_value})
