if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local named = redis.call('SCARD', KEYS[1]) - redis.call('SISMEMBER', KEYS[1], ARGV[2])
if named >= tonumber(ARGV[3]) then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
