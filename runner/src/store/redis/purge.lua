-- One step of deleting everything a tenant holds: up to ARGV[2] keys of
-- the buckets in its set KEYS[2] (found through each bucket's index, and
-- taken out of it and of everything else kept about them), each bucket
-- whose index is then empty, and once none is left the set, the expiry
-- schedule and the usage KEYS[1] but its generation and sequence. Answers
-- 1 when done, 0 when there is more. ARGV[1] is the tenant's tag.
local tag, budget = ARGV[1], tonumber(ARGV[2])
for _, bucket in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local head = head_of(bucket)
  local index, lex, versions = tag .. 'i' .. head, tag .. 'o' .. head, tag .. 'v' .. head
  local members = redis.call('ZRANGE', index, 0, budget - 1)
  if #members > 0 then
    local data, scheduled = {}, {}
    for j = 1, #members do
      data[j] = tag .. 'd' .. head .. members[j]
      scheduled[j] = head .. members[j]
    end
    redis.call('DEL', unpack(data))
    redis.call('ZREM', index, unpack(members))
    redis.call('ZREM', lex, unpack(members))
    redis.call('HDEL', versions, unpack(members))
    redis.call('ZREM', tag .. 'x', unpack(scheduled))
    redis.call('HDEL', tag .. 'l', unpack(scheduled))
    budget = budget - #members
  end
  if redis.call('EXISTS', index) == 0 then
    redis.call('DEL', lex, versions)
    redis.call('SREM', KEYS[2], bucket)
  end
  if budget <= 0 then return 0 end
end
-- The generation ('g', advanced before the first step) and the sequence
-- ('s', so no version token of before matches one of after) stay.
redis.call('HDEL', KEYS[1], 'k', 'b')
redis.call('DEL', KEYS[2], tag .. 'x', tag .. 'l')
return 1
