-- ARGV: prefix, node, old key, new key, new nick ('' for a new guest name), room.  Returns the nick or nil.
local old, key, nick, room = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if nick == '' then
  nick = guest()
  key = nick
else
  local n = holder(key)
  if n and (key ~= old or n ~= node) then return nil end
  redis.call('HSET', P .. 'nicks', key, node .. '\t' .. nick .. '\t0')
end
local placed = redis.call('HGET', P .. 'node:' .. node, old)
if key ~= old then
  if holder(old) == node then redis.call('HDEL', P .. 'nicks', old) end
  redis.call('HDEL', P .. 'node:' .. node, old)
end
-- Placed elsewhere than the room said (an IRC member enters in no room): left too.
if placed and placed ~= room then unplace(node, old, placed) end
unplace(node, old, room)
if room ~= '' then place(node, key, nick, room) end
return nick
