-- Post one message to a room shared through Redis: stamp it, keep it, index it, append it
-- to the message stream every process reads.
--
-- Redis runs a script as one step, and nothing else runs meanwhile, so every
-- process sees either all of this or none of it: the message is in the history
-- exactly when it is in the stream, and the order of the history is the order
-- of the stream (the order in which every process reads and delivers it). A
-- stream, unlike a pub/sub channel, can be read again from any id: a reader
-- whose connection dropped goes on from the last id it read, and a client can
-- resume from its position.
-- Nothing below can fail after the first write, so no half of it is ever left.
--
-- KEYS: 1 the room index (zset: folded name -> last activity), 2 the activity
--       counter, 3 the room (hash: name, sec, ns, json), 4 its history (list),
--       5 the message stream (field `m`: the message JSON; `n`: the activity count)
-- ARGV: 1 folded name, 2 room spelling as a JSON string, 3 username, 4 text,
--       5 id ("" when none; 2..5 already JSON-encoded), 6 max messages per room,
--       7 max rooms, 8 messages the stream keeps (at least), 9 key prefix
-- Returns the message's `created`.

local rooms, activity, room, history, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local fold, spelling, username, text, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_messages, max_rooms = tonumber(ARGV[6]), tonumber(ARGV[7])
local stream_length, prefix = ARGV[8], ARGV[9]

local state = redis.call('HMGET', room, 'name', 'sec', 'ns')
local name, last_sec, last_ns = state[1], tonumber(state[2]), tonumber(state[3])

if not name then
  -- a new room keeps this first spelling; past the limit the idlest rooms go first
  name = spelling
  local excess = redis.call('ZCARD', rooms) - max_rooms + 1
  if excess > 0 then
    local idlest = redis.call('ZPOPMIN', rooms, excess)
    for i = 1, #idlest, 2 do
      redis.call('DEL', prefix .. 'room:' .. idlest[i], prefix .. 'history:' .. idlest[i])
    end
  end
end

-- created = max(Redis TIME, the room's last created + 1 ns): unique and
-- increasing per room whichever process posts. Seconds and nanoseconds are
-- kept apart because Lua's numbers are doubles (exact only up to 2^53).
local now = redis.call('TIME')
local sec, ns = tonumber(now[1]), tonumber(now[2]) * 1000
if last_sec and (sec < last_sec or (sec == last_sec and ns <= last_ns)) then
  sec, ns = last_sec, last_ns + 1
  if ns >= 1000000000 then
    sec, ns = sec + 1, 0
  end
end

-- UTC RFC 3339 with nine fractional digits (days to civil date: H. Hinnant's algorithm)
local days = math.floor(sec / 86400)
local rest = sec - days * 86400
local z = days + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
  - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local day = doy - math.floor((153 * mp + 2) / 5) + 1
local month = mp < 10 and mp + 3 or mp - 9
local year = yoe + era * 400 + (month <= 2 and 1 or 0)
local created = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%09dZ', year, month, day,
  math.floor(rest / 3600), math.floor((rest % 3600) / 60), rest % 60, ns)

-- the same bytes actors/message.py makes: {"id"?, "room", "created", "sender", "text"}
local body = '"room":' .. name .. ',"created":"' .. created .. '","sender":{"username":'
  .. username .. '},"text":' .. text .. '}'
local summary = '{' .. body
local message = summary
if id ~= '' then
  message = '{"id":' .. id .. ',' .. body
end

redis.call('HSET', room, 'name', name, 'sec', string.format('%d', sec),
  'ns', string.format('%d', ns), 'json', '{"name":' .. name .. ',"last_message":' .. summary .. '}')
local count = redis.call('INCR', activity)  -- one more per message: readers see a gap by it
redis.call('ZADD', rooms, count, fold)
redis.call('RPUSH', history, message)
redis.call('LTRIM', history, -max_messages, -1)
redis.call('XADD', stream, 'MAXLEN', '~', stream_length, '*', 'm', message, 'n', count)
return created
