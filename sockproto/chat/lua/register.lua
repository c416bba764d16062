-- ARGV: prefix, node, then (key, nick, flag, room) for every member here:
-- after a lost link, this server's names and places are claimed again.
-- Returns the keys another server took meanwhile.
local placed = redis.call('HGETALL', P .. 'node:' .. node)
for i = 1, #placed, 2 do
  if holder(placed[i]) == node then redis.call('HDEL', P .. 'nicks', placed[i]) end
  unplace(node, placed[i], placed[i + 1])
end
redis.call('DEL', P .. 'node:' .. node)
local lost = {}
for i = 3, #ARGV, 4 do
  local key, nick, flag, room = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if holder(key) then
    lost[#lost + 1] = key
  else
    redis.call('HSET', P .. 'nicks', key, node .. '\t' .. nick .. '\t' .. flag)
    if room ~= '' then place(node, key, nick, room) end
  end
end
return lost
