local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
  out[#out + 1] = room
  out[#out + 1] = redis.call('HLEN', P .. 'room:' .. room)
end
return out
