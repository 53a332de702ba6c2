-- KEYS[2]: the tenant's usage hash, whose 'g' is its generation; ARGV[1]
-- the caller's ('' for none): a bucket of a purged generation is not made.
local generation = table.remove(ARGV, 1)
if generation ~= '' and (redis.call('HGET', KEYS[2], 'g') or '0') ~= generation then
  return -2
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local named = redis.call('SCARD', KEYS[1]) - redis.call('SISMEMBER', KEYS[1], ARGV[2])
if named >= tonumber(ARGV[3]) then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
