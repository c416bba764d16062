-- ARGV: prefix, node, key, room.
local key, room = ARGV[3], ARGV[4]
local placed = redis.call('HGET', P .. 'node:' .. node, key)
if holder(key) == node then redis.call('HDEL', P .. 'nicks', key) end
redis.call('HDEL', P .. 'node:' .. node, key)
if placed and placed ~= room then unplace(node, key, placed) end
unplace(node, key, room)
return 1
