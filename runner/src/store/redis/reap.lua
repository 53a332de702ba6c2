-- The reaper's step for one tenant (usage KEYS[1], tag ARGV[1]): reclaims
-- up to ARGV[2] entries whose expiry has passed. Answers the tenant's keys
-- and bytes after, and how many milliseconds until its next entry is due
-- (-1: none is scheduled).
local usage, tag = KEYS[1], ARGV[1]
local now = now_ms()
local keys, bytes = reap(tag, now, tonumber(ARGV[2]))
if keys > 0 then
  redis.call('HINCRBY', usage, 'k', -keys)
  redis.call('HINCRBY', usage, 'b', -bytes)
end
local held = redis.call('HMGET', usage, 'k', 'b')
local next = redis.call('ZRANGE', tag .. 'x', 0, 0, 'WITHSCORES')
local wait = -1
if #next > 0 then wait = math.max(0, tonumber(next[2]) - now) end
return {tonumber(held[1] or 0), tonumber(held[2] or 0), wait}
