-- ARGV: prefix, node, key, nick ('' for a guest), room.  Returns {nick, new
-- name of this server's guest that held the name, or ''}, or nil when a
-- verified user holds the name already.
local key, nick, room = ARGV[3], ARGV[4], ARGV[5]
local moved = ''
if nick == '' then
  nick = guest()
  key = nick
else
  local n, _, flag = holder(key)
  if n then
    if flag == '1' then return nil end
    -- A guest holds a verified name: the name goes to its user, the guest gets a new one.
    if n ~= node then
      publish({{'x', n, key}})
    else
      moved = guest()
      local was = redis.call('HGET', P .. 'node:' .. node, key)
      redis.call('HDEL', P .. 'node:' .. node, key)
      if was then
        unplace(node, key, was)
        place(node, moved, moved, was)
      end
    end
  end
  redis.call('HSET', P .. 'nicks', key, node .. '\t' .. nick .. '\t1')
end
place(node, key, nick, room)
return {nick, moved}
