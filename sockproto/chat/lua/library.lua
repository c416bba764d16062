-- Helpers shared by the scripts.  ARGV[1] is the key prefix, ARGV[2] this
-- server's name.  Hashes: nicks (casefolded nick -> "node<TAB>nick<TAB>0|1",
-- 1 for a verified name), room:<room> ("node<TAB>key" -> nick), node:<node>
-- (key -> room); sets: rooms, nodes, histories.
local P, node = ARGV[1], ARGV[2]
local LOBBY = 'LOBBY_NAME'
local function holder(key)
  local v = redis.call('HGET', P .. 'nicks', key)
  if not v then return nil end
  local n, nick, flag = string.match(v, '^(.-)\t(.-)\t(.*)$')
  return n, nick, flag
end
local function place(n, key, nick, room)
  redis.call('HSET', P .. 'node:' .. n, key, room)
  redis.call('HSET', P .. 'room:' .. room, n .. '\t' .. key, nick)
  redis.call('SADD', P .. 'rooms', room)
end
local function unplace(n, key, room)
  if room == nil or room == '' then return end
  redis.call('HDEL', P .. 'room:' .. room, n .. '\t' .. key)
  if room ~= LOBBY and redis.call('HLEN', P .. 'room:' .. room) == 0 then
    redis.call('SREM', P .. 'rooms', room)
  end
end
local function guest()
  while true do
    local nick = 'guest' .. redis.call('INCR', P .. 'guests')
    if redis.call('HSETNX', P .. 'nicks', nick, node .. '\t' .. nick .. '\t0') == 1 then return nick end
  end
end
local function publish(events)
  redis.call('PUBLISH', P .. 'events', '\n' .. cjson.encode({n = node, t = 0, e = events}))
end
