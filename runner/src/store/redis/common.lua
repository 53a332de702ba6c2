-- Shared by every script (prepended to each): how a tenant's keys are
-- named, as `Names` names them in Rust, and how an expired entry is
-- reclaimed. `tag` is the tenant's `P{hex}:`; a bucket's `head` is its name
-- length-prefixed, which with a key after it is the key's member in the
-- tenant's expiry schedule. Each function names only the keys it touches:
-- every write runs these, and Redis's time per call is most of a write's.

local function head_of(bucket)
  return #bucket .. ':' .. bucket
end

-- Redis's clock in milliseconds: the one its own key expiry follows, the
-- same for every runner.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether the tenant has keys scheduled to expire: only then does a write
-- read the clock and the schedule.
local function has_schedule(tag)
  return redis.call('EXISTS', tag .. 'x') == 1
end

-- Removes `key` and everything kept about it from its bucket; no
-- accounting.
local function unlink(tag, head, key)
  redis.call('DEL', tag .. 'd' .. head .. key)
  redis.call('ZREM', tag .. 'i' .. head, key)
  redis.call('ZREM', tag .. 'o' .. head, key)
  redis.call('HDEL', tag .. 'v' .. head, key)
end

-- Reclaims the scheduled entry `member` (`head .. key`): whatever Redis has
-- not dropped yet goes. Answers the bytes it counted.
local function reclaim(tag, member)
  local len, rest = string.match(member, '^(%d+):(.*)$')
  local bucket = string.sub(rest, 1, tonumber(len))
  local key = string.sub(rest, tonumber(len) + 1)
  unlink(tag, head_of(bucket), key)
  local size = tonumber(redis.call('HGET', tag .. 'l', member) or 0)
  redis.call('ZREM', tag .. 'x', member)
  redis.call('HDEL', tag .. 'l', member)
  return size
end

-- Reclaims up to `limit` of the tenant's entries whose time is before
-- `now` (Redis drops a key once its clock is past the expiry, so both agree
-- on which are gone). Answers the keys and bytes freed, for the caller to
-- take off the tenant's usage.
local function reap(tag, now, limit)
  local due = redis.call('ZRANGEBYSCORE', tag .. 'x', '-inf', '(' .. string.format('%d', now),
    'LIMIT', 0, limit)
  local bytes = 0
  for _, member in ipairs(due) do
    bytes = bytes + reclaim(tag, member)
  end
  return #due, bytes
end

-- Entries every write reclaims first: what has expired leaves room under
-- the quotas before the write is checked against them.
local REAP_ON_WRITE = 64

-- Reclaims `key` if its time has come (more than REAP_ON_WRITE entries may
-- have been due before it), so that it is absent to the write. Answers
-- whether the key is still scheduled to expire, and the keys and bytes
-- freed.
local function settle(tag, head, key, now)
  local member = head .. key
  local due = redis.call('ZSCORE', tag .. 'x', member)
  if not due then return false, 0, 0 end
  if tonumber(due) >= now then return true, 0, 0 end
  return false, 1, reclaim(tag, member)
end

-- After a write of `key` that counts `size` bytes with the key: `due` (ms)
-- schedules its expiry, when Redis drops it too; without one the key is
-- permanent, taken off the schedule if `scheduled` says it was on it. (A
-- SET clears Redis's own expiry; INCRBY keeps it, so its caller persists.)
local function schedule(tag, head, key, due, size, scheduled)
  local member = head .. key
  if due then
    redis.call('PEXPIREAT', tag .. 'd' .. member, due)
    redis.call('ZADD', tag .. 'x', due, member)
    redis.call('HSET', tag .. 'l', member, size)
  elseif scheduled then
    redis.call('ZREM', tag .. 'x', member)
    redis.call('HDEL', tag .. 'l', member)
  end
end

-- Gives the write of `key` the tenant's next sequence number as its
-- version; a key created anew takes it as its place in the bucket's
-- creation order too, and enters the key-ordered index.
local function stamp(tag, usage, head, key, created)
  local seq = redis.call('HINCRBY', usage, 's', 1)
  redis.call('HSET', tag .. 'v' .. head, key, seq)
  if created then
    redis.call('ZADD', tag .. 'i' .. head, seq, key)
    redis.call('ZADD', tag .. 'o' .. head, 0, key)
  end
end

-- The size of the value under `data`, or nil where there is none.
local function size_of(data)
  local len = redis.call('STRLEN', data)
  if len > 0 or redis.call('EXISTS', data) == 1 then return len end
  return nil
end

-- The generation the caller's namespace was made in ('' for none): a purge
-- advances the tenant's, and a write of an earlier one is refused, from
-- whichever runner it comes.
local function stale_generation(usage, generation)
  return generation ~= '' and (redis.call('HGET', usage, 'g') or '0') ~= generation
end
