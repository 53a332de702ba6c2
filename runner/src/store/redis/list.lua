-- One page of a bucket's keys in creation order, after score ARGV[3]
-- (exclusive; '-inf' from the start), at most ARGV[4] of them: KEYS[1] is
-- the index. Answers the live keys with their scores, then how many
-- entries were read and the last one's score: an entry whose value Redis
-- has already dropped (its expiry passed, the reaper not yet there) is
-- read but not listed.
local tag, bucket = ARGV[1], ARGV[2]
local data = tag .. 'd' .. head_of(bucket)
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local page = {}
for i = 1, #found, 2 do
  if redis.call('EXISTS', data .. found[i]) == 1 then
    page[#page + 1] = found[i]
    page[#page + 1] = found[i + 1]
  end
end
page[#page + 1] = #found / 2
page[#page + 1] = found[#found] or false
return page
