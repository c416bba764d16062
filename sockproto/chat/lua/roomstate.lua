-- ARGV: prefix, node, room, the version of its state this server knows, the
-- new state (JSON).  The state changes only if it is still that version:
-- returns {1, the new version}; else {0, the current version, the current
-- state or ''} and nothing changes.  A change is published as an "r" event
-- (room, version): the others read the state from Redis, so the event needs
-- no signature and says nothing that could be forged.
local room, expected, state = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local current = redis.call('HGET', P .. 'roomstates', room)
local version, was = 0, ''
if current then
  local tab = string.find(current, '	', 1, true)
  version, was = tonumber(string.sub(current, 1, tab - 1)), string.sub(current, tab + 1)
end
if version ~= expected then return {0, version, was} end
version = version + 1
redis.call('HSET', P .. 'roomstates', room, version .. '	' .. state)
publish({{'r', room, version}})
return {1, version}
