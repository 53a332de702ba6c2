local tag, budget = ARGV[1], tonumber(ARGV[2])
for _, bucket in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local head = #bucket .. ':' .. bucket
  local index = tag .. 'i' .. head
  local members = redis.call('ZRANGE', index, 0, budget - 1)
  if #members > 0 then
    local batch = {}
    for j = 1, #members do
      batch[j] = tag .. 'd' .. head .. members[j]
    end
    redis.call('DEL', unpack(batch))
    redis.call('ZREM', index, unpack(members))
    budget = budget - #members
  end
  if redis.call('EXISTS', index) == 0 then
    redis.call('SREM', KEYS[2], bucket)
  end
  if budget <= 0 then return 0 end
end
-- The generation ('g', advanced before the first step) stays.
redis.call('HDEL', KEYS[1], 'k', 'b', 's')
redis.call('DEL', KEYS[2])
return 1
