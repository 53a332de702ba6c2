-- Puts each pair (KEYS[4..], with ARGV[9..] key, value, ...) into one
-- bucket, in order, under the conditions ARGV[3] names; stops at the first
-- pair a quota or a condition refuses, the pairs before staying put and
-- counted. KEYS: usage, bucket set, index (for routing; the others are
-- named from the tag).
local generation = table.remove(ARGV, 1)
local usage, buckets = KEYS[1], KEYS[2]
if stale_generation(usage, generation) then return {'purged'} end
local tag, mode, expected, version = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_keys, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local bucket, ttl = ARGV[7], tonumber(ARGV[8])
local n = bucket_names(tag, bucket)
local now = now_ms()
local due = ttl and now + ttl
reap(tag, usage, now, REAP_ON_WRITE)
local conditional = mode ~= 'set'
local need_equal, need_version = string.find(mode, 'equal', 1, true), string.find(mode, 'version', 1, true)
redis.call('SADD', buckets, bucket)
for i = 4, #KEYS do
  local data, key, value = KEYS[i], ARGV[2 * i + 1], ARGV[2 * i + 2]
  local scheduled = settle(tag, usage, n, key, now)
  local held = redis.call('HMGET', usage, 'k', 'b')
  local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
  local old_size
  if conditional then
    local old = redis.call('GET', data)
    local refused = (mode == 'absent' and old)
      or (need_equal and old ~= expected)
    if need_version and not refused then
      local current = old and (redis.call('HGET', n.versions, key) or '0')
      refused = current ~= version
    end
    if refused then
      local current = old and (redis.call('HGET', n.versions, key) or '0')
      return {'changed', old or false, current or false}
    end
    old_size = old and #old
  elseif redis.call('EXISTS', data) == 1 then
    old_size = redis.call('STRLEN', data)
  end
  local created, grow = not old_size, 0
  if created then grow = #key + #value else grow = #value - old_size end
  if created and keys + 1 > max_keys then return {'keys', keys} end
  if grow > 0 and bytes + grow > max_bytes then return {'bytes', bytes, grow} end
  redis.call('SET', data, value)
  stamp(usage, n, key, created)
  schedule(tag, n, key, due, #key + #value, scheduled)
  if created then keys = keys + 1 end
  redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes + grow))
end
local held = redis.call('HMGET', usage, 'k', 'b')
return {'ok', tonumber(held[1] or 0), tonumber(held[2] or 0)}
