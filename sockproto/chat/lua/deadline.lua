-- For the scripts that publish what a user said: true once Redis's clock has
-- passed a deadline (ms), after which the sender may have been told it was
-- lost, so it must not be published any more.
local function late(deadline)
  if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes (Redis < 5)
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(deadline)
end
