-- KEYS[1]: a key's data; ARGV: the tenant's tag, the bucket, the key.
-- Answers its value and version together, or nil: one atomic read, so the
-- version is the one of the value answered.
local value = redis.call('GET', KEYS[1])
if not value then return false end
local versions = ARGV[1] .. 'v' .. head_of(ARGV[2])
return {value, redis.call('HGET', versions, ARGV[3]) or '0'}
