-- ARGV: prefix, node, key, the server that holds it, deadline (ms, Redis's
-- clock), payload.  Returns the holder's nick; nil when that server does not
-- hold the name (any more); 0 when the deadline has passed (nothing sent).
local n, nick = holder(ARGV[3])
if n ~= ARGV[4] then return nil end
if late(ARGV[5]) then return 0 end
redis.call('PUBLISH', P .. 'events', '\n' .. ARGV[6])
return nick
