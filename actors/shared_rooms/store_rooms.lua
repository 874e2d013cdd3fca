-- The room list in one step: every room's object, most recently active first.
-- KEYS: 1 the room index; ARGV: 1 key prefix.
local rooms = {}
for i, fold in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  rooms[i] = redis.call('HGET', ARGV[1] .. 'room:' .. fold, 'json')
end
return rooms
