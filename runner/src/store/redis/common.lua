-- Shared by every script (prepended to each): how a tenant's keys are
-- named, as `Names` names them in Rust, and how an expired entry is
-- reclaimed. `tag` is the tenant's `P{hex}:`.

-- A bucket's keys. `head` is the bucket length-prefixed, which also starts
-- an entry's member in the tenant's expiry schedule (`head .. key`).
local function bucket_names(tag, bucket)
  local head = #bucket .. ':' .. bucket
  return {
    head = head,
    index = tag .. 'i' .. head,
    lex = tag .. 'o' .. head,
    versions = tag .. 'v' .. head,
    data = tag .. 'd' .. head,
  }
end

-- Redis's clock in milliseconds: the one its own key expiry follows, the
-- same for every runner.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes `key` and everything kept about it from its bucket; no
-- accounting.
local function unlink(n, key)
  redis.call('DEL', n.data .. key)
  redis.call('ZREM', n.index, key)
  redis.call('ZREM', n.lex, key)
  redis.call('HDEL', n.versions, key)
end

-- Reclaims the scheduled entry `member` (`head .. key`): whatever Redis has
-- not dropped yet goes, and its key and bytes are given back. Answers the
-- bytes it held.
local function reclaim(tag, member)
  local len, rest = string.match(member, '^(%d+):(.*)$')
  local bucket = string.sub(rest, 1, tonumber(len))
  local key = string.sub(rest, tonumber(len) + 1)
  unlink(bucket_names(tag, bucket), key)
  local size = tonumber(redis.call('HGET', tag .. 'l', member) or 0)
  redis.call('ZREM', tag .. 'x', member)
  redis.call('HDEL', tag .. 'l', member)
  return size
end

-- Reclaims up to `limit` of the tenant's entries whose time is before
-- `now` (Redis drops a key once its clock is past the expiry, so both agree
-- on which are gone), taking them off the usage hash `usage`. Answers how
-- many it reclaimed.
local function reap(tag, usage, now, limit)
  local due = redis.call('ZRANGEBYSCORE', tag .. 'x', '-inf', '(' .. string.format('%d', now),
    'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local bytes = 0
  for _, member in ipairs(due) do
    bytes = bytes + reclaim(tag, member)
  end
  redis.call('HINCRBY', usage, 'k', -#due)
  redis.call('HINCRBY', usage, 'b', -bytes)
  return #due
end

-- Entries every write reclaims first: what has expired leaves room under
-- the quotas before the write is checked against them.
local REAP_ON_WRITE = 64

-- Reclaims `key` of bucket `n` if its time has come (more than
-- REAP_ON_WRITE entries may have been due before it), so that it is absent
-- to the write. Answers whether the key is still scheduled to expire.
local function settle(tag, usage, n, key, now)
  local member = n.head .. key
  local due = redis.call('ZSCORE', tag .. 'x', member)
  if not due then return false end
  if tonumber(due) >= now then return true end
  local size = reclaim(tag, member)
  redis.call('HINCRBY', usage, 'k', -1)
  redis.call('HINCRBY', usage, 'b', -size)
  return false
end

-- After a write of `key` that held `size` bytes with the key: `due` (ms)
-- schedules its expiry, when Redis drops it too; without one the key is
-- permanent, taken off the schedule if `scheduled` says it was on it. (A
-- SET clears Redis's own expiry; INCRBY keeps it, so its caller persists.)
local function schedule(tag, n, key, due, size, scheduled)
  local member = n.head .. key
  if due then
    redis.call('PEXPIREAT', n.data .. key, due)
    redis.call('ZADD', tag .. 'x', due, member)
    redis.call('HSET', tag .. 'l', member, size)
  elseif scheduled then
    redis.call('ZREM', tag .. 'x', member)
    redis.call('HDEL', tag .. 'l', member)
  end
end

-- Gives the write of `key` in bucket `n` the tenant's next sequence
-- number as its version; a key created anew takes it as its place in the
-- bucket's creation order too, and enters the key-ordered index.
local function stamp(usage, n, key, created)
  local seq = redis.call('HINCRBY', usage, 's', 1)
  redis.call('HSET', n.versions, key, seq)
  if created then
    redis.call('ZADD', n.index, seq, key)
    redis.call('ZADD', n.lex, 0, key)
  end
  return seq
end

-- The generation the caller's namespace was made in ('' for none): a purge
-- advances the tenant's, and a write of an earlier one is refused, from
-- whichever runner it comes.
local function stale_generation(usage, generation)
  return generation ~= '' and (redis.call('HGET', usage, 'g') or '0') ~= generation
end
