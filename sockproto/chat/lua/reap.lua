-- ARGV: prefix, node, reason, and optionally one server's name: that server
-- (else every server whose heartbeat has expired) is removed, and a 'g'
-- event tells the others who left.  Each call also looks at a slice of the
-- names (PREFIXreaping keeps the place): a name held by a server without a
-- heartbeat (one that never had one, written by anyone who may write the
-- keys) is freed the same way.  Returns the servers of the cluster.
local gone, seen = {}, {}
if ARGV[4] then
  gone = {ARGV[4]}
  redis.call('DEL', P .. 'alive:' .. ARGV[4])
else
  if redis.replicate_commands then redis.replicate_commands() end  -- HSCAN before writes (Redis < 5)
  for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    if redis.call('EXISTS', P .. 'alive:' .. n) == 0 then
      gone[#gone + 1] = n
      seen[n] = true
    end
  end
  local scan = redis.call('HSCAN', P .. 'nicks', redis.call('GET', P .. 'reaping') or '0', 'COUNT', 100)
  redis.call('SET', P .. 'reaping', scan[1])
  for i = 1, #scan[2], 2 do
    local n = string.match(scan[2][i + 1], '^(.-)\t')
    if not n or redis.call('EXISTS', P .. 'alive:' .. n) == 0 then
      redis.call('HDEL', P .. 'nicks', scan[2][i])
      if n and not seen[n] then
        gone[#gone + 1] = n
        seen[n] = true
      end
    end
  end
end
for _, n in ipairs(gone) do
  local members = {}
  local placed = redis.call('HGETALL', P .. 'node:' .. n)
  for i = 1, #placed, 2 do
    local key, room = placed[i], placed[i + 1]
    local h, nick = holder(key)
    if h == n then redis.call('HDEL', P .. 'nicks', key) end
    nick = redis.call('HGET', P .. 'room:' .. room, n .. '\t' .. key) or nick or key
    unplace(n, key, room)
    members[#members + 1] = {nick, room}
  end
  redis.call('DEL', P .. 'node:' .. n)
  if redis.call('SREM', P .. 'nodes', n) == 1 or #members > 0 then
    publish({{'g', n, members, ARGV[3]}})
  end
end
return redis.call('SMEMBERS', P .. 'nodes')
