-- One page of a bucket's keys starting with ARGV[3], in key order, after
-- ARGV[4] ('' from the start of the prefix), at most ARGV[5] of them:
-- KEYS[1] is the bucket's key-ordered index. A lexicographic range costs a
-- seek plus the keys it returns, whatever else the bucket holds. Answers
-- the live keys, then the last key read, then 1 if a key under the prefix
-- follows it (entries whose value Redis has dropped are read, not listed).
local tag, bucket, prefix, after, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local data = tag .. 'd' .. head_of(bucket)
local from
if after ~= '' and after >= prefix then
  from = '(' .. after
elseif prefix == '' then
  from = '-'
else
  from = '[' .. prefix
end
local found = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, limit + 1)
local page, last, more = {}, false, 0
for i = 1, #found do
  local key = found[i]
  if string.sub(key, 1, #prefix) ~= prefix then break end
  if i > limit then more = 1 break end
  last = key
  if redis.call('EXISTS', data .. key) == 1 then page[#page + 1] = key end
end
page[#page + 1] = last
page[#page + 1] = more
return page
