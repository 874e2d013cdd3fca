-- Store a batch of messages that Python stamped and encoded: check, keep, index, budget, and
-- append them to the message stream every process reads.
--
-- Python makes every byte a client sees and every `created` (actors/chat/message.py);
-- this script only checks and orders what it is given. Redis runs a script as one step
-- with nothing in between, so every process sees all of a message or none of it: it is
-- in its room's history exactly when it is in the stream, in the stream's order.
--
-- Each message is checked before anything of it is written. The script stops at the first
-- one it refuses and answers how many it stored, so Python fixes that one and sends it and
-- the rest again, and a process's messages are never stored out of order:
--   created   its `created` is not later than the data set's last one (another process,
--             or a clock behind Redis's data, stamped later): re-stamp past `detail`
--   spelling  its room exists with another first spelling: re-encode with `detail`
--   new       its room does not exist (any more), and the spelling given was a cached one:
--             re-encode with the message's own spelling
--   error     Redis refused a command on its keys (`detail`); it was not stored
-- A key shared by every message of the wrong type refuses the whole call (an error reply).
--
-- Budgets, the same policy as the in-memory registry (actors/chat/registry.py):
--   rooms  a room's creator is the address of its first message. A new room whose creator
--          already has max_rooms_per_address rooms forgets that creator's least recently
--          active room; else, at max_rooms, the least recently active room of the address
--          that created the most is forgotten.
--   bytes  each message counts the length of its JSON against its poster's address. After
--          a message is stored, while its poster holds more than max_bytes_per_address its
--          own oldest message is forgotten; then while all together hold more than
--          max_bytes, the oldest message of the address holding the most is forgotten;
--          never the message just stored. A room whose last message goes disappears; one
--          whose newest goes shows its newest remaining one as `last_message`.
--   count  a room keeps its last max_messages; the oldest go, and leave the counts.
--
-- KEYS: 1 rooms    zset   folded name -> activity of its last message
--       2 activity string one more per message: a message's number `n`
--       3 last     string the last `created` stored (20 digits of nanoseconds)
--       4 creators zset   address -> rooms it created that still exist
--       5 holders  zset   address -> bytes of its messages kept
--       6 total    string bytes of every message kept
--       7 owners   hash   n -> "<id bytes>\t<address>\t<folded room>" for every message kept
--       8 stream   stream every message (`m`: its JSON, `n`: its number)
--       9 streamed string bytes of the messages in the stream
--   and, under the prefix, per room and per address:
--       room:<folded>         hash  name (first spelling, JSON), creator, json (room object)
--       messages:<folded>     zset  n -> message JSON: the room's history, oldest first
--       rooms_of:<address>    zset  folded name -> activity, the rooms it created
--       messages_of:<address> zset  n -> n, its messages kept, oldest first
-- ARGV: 1 key prefix, 2 max_messages (per room), 3 max_rooms, 4 max_rooms_per_address,
--       5 max_bytes, 6 max_bytes_per_address, 7 stream messages, 8 stream bytes; then 7 per
--       message: folded name, spelling (a JSON string), "1" if that is the message's own
--       spelling, created (20 digits), address, message JSON, bytes of its `"id":…,` part
-- Returns {stored, last created, refused ("" when none), detail}.

local rooms, activity, last_key, creators = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local holders, total, owners, stream, streamed = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local prefix = ARGV[1]
local max_messages, max_rooms = tonumber(ARGV[2]), tonumber(ARGV[3])
local max_rooms_per_address = tonumber(ARGV[4])
local max_bytes, max_bytes_per_address = tonumber(ARGV[5]), tonumber(ARGV[6])
local stream_messages, stream_bytes = tonumber(ARGV[7]), tonumber(ARGV[8])
local FIELDS, FIRST = 7, 8
local STREAM_SLACK = 100  -- messages the stream may hold over stream_messages before a trim
local MAX_ROUNDS = 100000  -- messages one budget may forget for one message posted

local function later(a, b)
  -- a > b for two 20-digit stamps; Lua numbers are doubles, exact only to 2^53, so
  -- seconds and nanoseconds are compared apart ('' is the stamp of an empty data set)
  if b == '' then return true end
  local sa, sb = tonumber(string.sub(a, 1, 11)), tonumber(string.sub(b, 1, 11))
  return sa > sb or (sa == sb and tonumber(string.sub(a, 12)) > tonumber(string.sub(b, 12)))
end

local function owner(n)
  -- (bytes of its id part, address, folded room) of message n
  local found = redis.call('HGET', owners, n)
  if not found then return 0, '', nil end
  local id_bytes, address, folded = string.match(found, '^(%d+)\t([^\t]*)\t(.*)$')
  return tonumber(id_bytes), address, folded
end

local function show_last(room, name, message, id_bytes)
  -- the room object: its first spelling and the message without its id (Python's room_json)
  redis.call('HSET', room, 'json', '{"name":' .. name .. ',"last_message":{'
    .. string.sub(message, 2 + id_bytes) .. '}')
end

local function release(n, size, address)
  -- message n (`size` bytes, posted from `address`) is no longer kept
  redis.call('HDEL', owners, n)
  redis.call('ZREM', prefix .. 'messages_of:' .. address, n)
  if tonumber(redis.call('ZINCRBY', holders, -size, address)) <= 0 then
    redis.call('ZREM', holders, address)
  end
  redis.call('DECRBY', total, size)
end

local function forget_room(folded)
  local room, messages = prefix .. 'room:' .. folded, prefix .. 'messages:' .. folded
  local creator = redis.call('HGET', room, 'creator') or ''
  local kept = redis.call('ZRANGE', messages, 0, -1, 'WITHSCORES')
  for i = 1, #kept, 2 do
    local _, address = owner(kept[i + 1])
    release(kept[i + 1], #kept[i], address)
  end
  redis.call('DEL', room, messages)
  redis.call('ZREM', rooms, folded)
  if redis.call('ZREM', prefix .. 'rooms_of:' .. creator, folded) == 1
      and tonumber(redis.call('ZINCRBY', creators, -1, creator)) <= 0 then
    redis.call('ZREM', creators, creator)
  end
end

local function forget_message(n, address, folded)
  -- message n, found in the messages of `address` or of the room `folded`; what `owners`
  -- says wins, and without it (a data set left half-written) it goes from where it was found
  local _, owned_by, owned_in = owner(n)
  if owned_in then
    address, folded = owned_by, owned_in
  elseif not folded then
    redis.call('ZREM', prefix .. 'messages_of:' .. address, n)
    return
  end
  address = address or ''
  local room, messages = prefix .. 'room:' .. folded, prefix .. 'messages:' .. folded
  local message = redis.call('ZRANGEBYSCORE', messages, n, n)[1]
  redis.call('ZREMRANGEBYSCORE', messages, n, n)
  release(n, message and #message or 0, address)
  local newest = redis.call('ZRANGE', messages, -1, -1, 'WITHSCORES')
  if #newest == 0 then
    forget_room(folded)  -- a room without messages appears nowhere
  elseif tonumber(newest[2]) < tonumber(n) then  -- it was the newest: show the one before
    show_last(room, redis.call('HGET', room, 'name'), newest[1], (owner(newest[2])))
  end
end

local function oldest_of(address)
  return redis.call('ZRANGE', prefix .. 'messages_of:' .. address, 0, 0)[1]
end

local function trim_stream()
  -- the stream keeps the newest stream_messages messages and stream_bytes bytes; it is
  -- trimmed once it holds a slack more, in one go, so most messages trim nothing
  local length, size = redis.call('XLEN', stream), tonumber(redis.call('GET', streamed) or '0')
  if length <= stream_messages + STREAM_SLACK and size <= stream_bytes + stream_bytes / 64 then
    return
  end
  local keep_from, after, count = nil, '-', 1
  while (length > stream_messages or size > stream_bytes) and length > 1 do
    local entries = redis.call('XRANGE', stream, after, '+', 'COUNT', count)
    count = math.min(count * 2, 64)  -- usually one goes per message: read no more than needed
    for _, entry in ipairs(entries) do
      if length <= 1 or (length <= stream_messages and size <= stream_bytes) then
        keep_from = entry[1]
        break
      end
      local fields = entry[2]
      for f = 1, #fields, 2 do
        if fields[f] == 'm' then size = size - #fields[f + 1] end
      end
      length = length - 1
      after = '(' .. entry[1]
    end
    if keep_from or #entries == 0 then break end
  end
  if after ~= '-' then
    if not keep_from then keep_from = redis.call('XRANGE', stream, after, '+', 'COUNT', 1)[1][1] end
    redis.call('XTRIM', stream, 'MINID', keep_from)
    redis.call('SET', streamed, math.max(size, 0))
  end
end

local function check_shared()
  -- read every key any message writes, before writing any: a key of the wrong type
  -- (planted under the prefix) refuses the batch here, with nothing of it stored
  redis.call('ZCARD', rooms); redis.call('GET', activity); redis.call('ZCARD', creators)
  redis.call('ZCARD', holders); redis.call('GET', total); redis.call('HLEN', owners)
  redis.call('XLEN', stream); redis.call('GET', streamed); redis.call('GET', last_key)
end

local function check(folded, address)
  -- the same for the keys of this message's room and address
  redis.call('ZCARD', prefix .. 'messages:' .. folded)
  redis.call('ZCARD', prefix .. 'rooms_of:' .. address)
  redis.call('ZCARD', prefix .. 'messages_of:' .. address)
  return redis.call('HMGET', prefix .. 'room:' .. folded, 'name', 'creator')
end

local function store(folded, name, created, address, message, id_bytes, creator)
  local room, messages = prefix .. 'room:' .. folded, prefix .. 'messages:' .. folded
  if not creator then  -- a new room: make room for it first
    local forget = nil
    if tonumber(redis.call('ZSCORE', creators, address) or '0') >= max_rooms_per_address then
      forget = redis.call('ZRANGE', prefix .. 'rooms_of:' .. address, 0, 0)[1]
    end
    if not forget and redis.call('ZCARD', rooms) >= max_rooms then
      local most = redis.call('ZREVRANGE', creators, 0, 0)[1]
      forget = most and redis.call('ZRANGE', prefix .. 'rooms_of:' .. most, 0, 0)[1]
        or redis.call('ZRANGE', rooms, 0, 0)[1]
    end
    if forget then forget_room(forget) end
    creator = address
    redis.call('HSET', room, 'name', name, 'creator', creator)
    redis.call('ZINCRBY', creators, 1, creator)
  end
  local n = string.format('%d', redis.call('INCR', activity))
  local size = #message
  redis.call('ZADD', rooms, n, folded)
  redis.call('ZADD', prefix .. 'rooms_of:' .. creator, n, folded)
  redis.call('ZADD', messages, n, message)
  redis.call('HSET', owners, n, id_bytes .. '\t' .. address .. '\t' .. folded)
  redis.call('ZADD', prefix .. 'messages_of:' .. address, n, n)
  redis.call('ZINCRBY', holders, size, address)
  redis.call('INCRBY', total, size)
  redis.call('SET', last_key, created)
  show_last(room, name, message, id_bytes)

  -- each loop forgets one message a round, and stops by MAX_ROUNDS whatever the data say
  for _ = 1, MAX_ROUNDS do
    if redis.call('ZCARD', messages) <= max_messages then break end
    forget_message(redis.call('ZRANGE', messages, 0, 0, 'WITHSCORES')[2], nil, folded)
  end
  for _ = 1, MAX_ROUNDS do
    if tonumber(redis.call('ZSCORE', holders, address) or '0') <= max_bytes_per_address then break end
    local oldest = oldest_of(address)
    if not oldest or oldest == n then break end
    forget_message(oldest, address, nil)
  end
  for _ = 1, MAX_ROUNDS do
    if tonumber(redis.call('GET', total) or '0') <= max_bytes then break end
    local most = redis.call('ZREVRANGE', holders, 0, 0)[1]
    local oldest = most and oldest_of(most)
    if not oldest or oldest == n then break end
    forget_message(oldest, most, nil)
  end

  redis.call('XADD', stream, '*', 'm', message, 'n', n)
  redis.call('INCRBY', streamed, size)
  trim_stream()
end

local checked, why = pcall(check_shared)
if not checked then  -- the whole data set is unusable: refuse the whole call
  return redis.error_reply(type(why) == 'table' and why.err or tostring(why))
end
local last = redis.call('GET', last_key) or ''
for i = 1, (#ARGV - FIRST) / FIELDS do
  local at = FIRST + (i - 1) * FIELDS
  local folded, name, own, created = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local address, message, id_bytes = ARGV[at + 5], ARGV[at + 6], tonumber(ARGV[at + 7])
  local ok, state = pcall(check, folded, address)
  if not ok then
    return {i - 1, last, 'error', type(state) == 'table' and state.err or tostring(state)}
  end
  if not later(created, last) then
    return {i - 1, last, 'created', last}
  end
  local stored, creator = state[1], state[2]
  if stored and stored ~= name then
    return {i - 1, last, 'spelling', stored}
  end
  if not stored and own ~= '1' then
    return {i - 1, last, 'new', ''}
  end
  local done, failed = pcall(store, folded, name, created, address, message, id_bytes,
    stored and (creator or '') or nil)
  if not done then
    return {i - 1, last, 'error', type(failed) == 'table' and failed.err or tostring(failed)}
  end
  last = created
end
return {(#ARGV - FIRST) / FIELDS, last, '', ''}
