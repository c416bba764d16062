-- ARGV: prefix, node, stream length, deadline (ms, Redis's clock), payload,
-- then (room, entry) pairs: each entry goes into its room's stream, and the
-- payload is published with their stream ids in front, in the same atomic
-- step; nothing when the deadline has passed (returns false).
if late(ARGV[4]) then return false end
local ids = {}
for i = 6, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', P .. 'history:' .. ARGV[i], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i + 1])
  redis.call('SADD', P .. 'histories', ARGV[i])
end
return redis.call('PUBLISH', P .. 'events', table.concat(ids, ',') .. '\n' .. ARGV[5])
