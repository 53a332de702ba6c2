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
local head = head_of(bucket)
local held = redis.call('HMGET', usage, 'k', 'b')
local keys, bytes = tonumber(held[1] or 0), tonumber(held[2] or 0)
local expiring = has_schedule(tag)
local now, due
if ttl or expiring then now = now_ms() end
if ttl then due = now + ttl end
if expiring then
  local k, b = reap(tag, now, REAP_ON_WRITE)
  keys, bytes = keys - k, bytes - b
end
local function finish(reply)
  redis.call('HSET', usage, 'k', string.format('%d', keys), 'b', string.format('%d', bytes))
  return reply
end
local conditional = mode ~= 'set'
local need_equal = string.find(mode, 'equal', 1, true)
local need_version = string.find(mode, 'version', 1, true)
redis.call('SADD', buckets, bucket)
for i = 4, #KEYS do
  local data, key, value = KEYS[i], ARGV[2 * i + 1], ARGV[2 * i + 2]
  local scheduled = false
  if expiring then
    local k, b
    scheduled, k, b = settle(tag, head, key, now)
    keys, bytes = keys - k, bytes - b
  end
  local old_size
  if conditional then
    local old = redis.call('GET', data)
    local refused = (mode == 'absent' and old) or (need_equal and old ~= expected)
    local current
    if old and (need_version or refused) then
      current = redis.call('HGET', tag .. 'v' .. head, key) or '0'
    end
    if need_version and not refused then refused = current ~= version end
    if refused then return finish({'changed', old or false, current or false}) end
    old_size = old and #old
  else
    old_size = size_of(data)
  end
  local created, grow = not old_size, 0
  if created then grow = #key + #value else grow = #value - old_size end
  if created and keys + 1 > max_keys then return finish({'keys', keys}) end
  if grow > 0 and bytes + grow > max_bytes then return finish({'bytes', bytes, grow}) end
  redis.call('SET', data, value)
  stamp(tag, usage, head, key, created)
  if due or scheduled then schedule(tag, head, key, due, #key + #value, scheduled) end
  if created then keys = keys + 1 end
  bytes = bytes + grow
end
return finish({'ok', keys, bytes})
