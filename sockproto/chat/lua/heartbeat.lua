-- ARGV: prefix, node, token, ttl in ms.  Returns 0 when another live server
-- has this name, 2 when this server had no heartbeat (new, or taken for gone
-- after a stall), else 1.
local current = redis.call('GET', P .. 'alive:' .. node)
if current and current ~= ARGV[3] then return 0 end
redis.call('SET', P .. 'alive:' .. node, ARGV[3], 'PX', ARGV[4])
redis.call('SADD', P .. 'nodes', node)
if current then return 1 end
return 2
