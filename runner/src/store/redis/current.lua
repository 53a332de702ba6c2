-- KEYS[1]: a key's data; ARGV: the tenant's tag, the bucket, the key.
-- Answers its value and version together, or nil: one atomic read, so the
-- version is the one of the value answered.
local value = redis.call('GET', KEYS[1])
if not value then return false end
local n = bucket_names(ARGV[1], ARGV[2])
return {value, redis.call('HGET', n.versions, ARGV[3]) or '0'}
