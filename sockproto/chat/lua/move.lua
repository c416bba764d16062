-- ARGV: prefix, node, key, nick, old room, new room, most rooms.  Returns 1, or 0 for too many rooms.
local key, nick, old, new = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('SISMEMBER', P .. 'rooms', new) == 0 and redis.call('SCARD', P .. 'rooms') >= tonumber(ARGV[7]) then
  return 0
end
-- Where this server placed the member last is the truth (an IRC member enters in no room,
-- and parts rooms without moving): the old room said and that one are both left.
local placed = redis.call('HGET', P .. 'node:' .. node, key)
if placed and placed ~= old then unplace(node, key, placed) end
unplace(node, key, old)
place(node, key, nick, new)
return 1
