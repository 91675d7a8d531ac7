-- Helpers every bookstream functions library shares. read_library() puts this text
-- right after a library's '#!lua name=' line, so each library stays one FUNCTION LOAD.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Stream ids compared and incremented as decimal strings: a hostile producer may XADD
-- ids up to 2^64-1, which a Lua number (a double) cannot hold exactly.
local function split_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms or id, seq or '0'
end

local function num_less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

local function id_less(a, b)
  local am, as = split_id(a)
  local bm, bs = split_id(b)
  if am ~= bm then return num_less(am, bm) end
  return num_less(as, bs)
end

local MAX_PART = '18446744073709551615'

local function incr_decimal(s)
  local digits = {string.byte(s, 1, -1)}
  local i = #digits
  while i >= 1 do
    if digits[i] < 57 then
      digits[i] = digits[i] + 1
      return string.char(unpack(digits))
    end
    digits[i] = 48
    i = i - 1
  end
  return '1' .. string.char(unpack(digits))
end

-- The smallest id after `id`, or nil when `id` is the largest possible one.
local function id_next(id)
  local ms, seq = split_id(id)
  if seq ~= MAX_PART then return ms .. '-' .. incr_decimal(seq) end
  if ms ~= MAX_PART then return incr_decimal(ms) .. '-0' end
  return nil
end

-- The millisecond part of an entry id as a number (for latencies; exact enough there).
local function entry_ms(entry_id)
  return tonumber(string.match(entry_id, '^(%d+)')) or 0
end

-- A JSON string. Ids rarely need escaping, and wrapping them in quotes costs far less
-- than cjson.encode.
local function q(s)
  if string.find(s, '[%c"\\\128-\255]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end

-- JSON array of strings; cjson would encode an empty table as {}.
local function json_list(items)
  local n = #items
  if n == 0 then return '[]' end
  if n == 1 then return '[' .. q(items[1]) .. ']' end
  local parts = {}
  for i = 1, n do parts[i] = q(items[i]) end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function json_unavailable(items)
  if #items == 0 then return '[]' end
  local parts = {}
  for i, item in ipairs(items) do
    parts[i] = '{"book":' .. q(item[1]) .. ',"reason":"' .. item[2] .. '"}'
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local EMPTY = {}

-- An entry over the bounds is cut to its first CUT_BYTES per value (bs1_read, bs1_admit);
-- one of at most IDENTIFY_BYTES is still parsed to find whom to answer.
local CUT_BYTES, IDENTIFY_BYTES = 8192, 2 * 1024 * 1024

-- The request id and kind a JSON event names, or nil (not an object of strings id and
-- type, or over IDENTIFY_BYTES).
local function named_by(value)
  if #value > IDENTIFY_BYTES then return nil end
  local ok, event = pcall(cjson.decode, value)
  if ok and type(event) == 'table' and type(event.id) == 'string'
      and type(event.type) == 'string' then
    return event.id, event.type
  end
  return nil
end

-- The one writer of an outcome's JSON: bookstream_core.events.Outcome, its field names
-- and order (tests/lending/test_contract.py decodes every path strictly). Lending's
-- decisions and the core's `rejected` answers both build it here.
local function outcome_json(reqid, kind, status, user, fields)
  local lent, returned = json_list(fields.lent or EMPTY), json_list(fields.returned or EMPTY)
  -- Most requests lend, and most returns take back, every book named: the same list,
  -- written once.
  local books = (fields.books == fields.lent and lent)
    or (fields.books == fields.returned and returned) or json_list(fields.books or EMPTY)
  return '{"request_id":' .. q(reqid)
    .. ',"kind":"' .. kind .. '","status":"' .. status .. '"'
    .. ',"user":' .. q(user)
    .. ',"books":' .. books
    .. ',"lent":' .. lent
    .. ',"unavailable":' .. json_unavailable(fields.unavailable or EMPTY)
    .. ',"returned":' .. returned
    .. ',"not_held":' .. json_list(fields.not_held or EMPTY)
    .. ',"reason":' .. (fields.reason and q(fields.reason) or 'null')
    .. ',"books_in_hand":' .. json_list(fields.in_hand or EMPTY)
    .. ',"limit":' .. (fields.limit or 'null')
    .. ',"entry":' .. (fields.entry and q(fields.entry) or 'null')
    .. ',"submission":' .. (fields.submission and q(fields.submission) or 'null') .. '}'
end

-- Everything a call may fail on is checked before its first write, because Redis keeps
-- the writes a script made before an error. A failed check is the environment's fault,
-- not the entry's: the reply starts with BSENV and the worker retries the batch later.
local function env_error(what)
  return error({err = 'BSENV ' .. what})
end

-- key must be absent or of type `kind`.
local function expect_type(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then
    env_error(key .. ' is a ' .. t .. ', expected a ' .. kind)
  end
end

local FUTURE_MS = 86400000  -- an id this far ahead of Redis's clock was set by a producer

local function last_generated_id(stream)
  local info = redis.call('XINFO', 'STREAM', stream)
  for k = 1, #info, 2 do
    if info[k] == 'last-generated-id' then return info[k + 1] end
  end
end

-- A producer that XADDs an id far in the future (up to the largest possible one, even
-- with MAXLEN 0 so that no entry remains) makes every later XADD '*' fail or run out of
-- ids. Bring the stream's and its groups' last ids back to the newest entry left (or
-- now). Future entries are deleted where `may_delete` (a stream nobody consumes: the
-- events, dead letters); in an inbox they wait to be set aside by its reader, which
-- calls this again. Returns false while a future entry stays.
local function repair_stream_ids(stream, may_delete)
  local now = now_ms()
  local limit = tostring(now + FUTURE_MS) .. '-0'
  if not id_less(limit, last_generated_id(stream)) then return true end
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  while top and id_less(limit, top[1]) do
    if not may_delete then return false end
    redis.call('XDEL', stream, top[1])
    top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  end
  local target = tostring(now) .. '-0'
  if top and id_less(target, top[1]) then target = top[1] end
  redis.call('XSETID', stream, target)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local group = {}
    for k = 1, #g, 2 do group[g[k]] = g[k + 1] end
    if id_less(target, group['last-delivered-id']) then
      redis.call('XGROUP', 'SETID', stream, group['name'], target)
    end
  end
  return true
end

-- An XADD with '*' to `stream` can succeed: it is absent or a stream, and its ids are
-- not pushed to the end of their range (repaired here when they can be).
local function expect_stream_room(stream, may_delete)
  local t = redis.call('TYPE', stream)['ok']
  if t == 'none' then return end
  if t ~= 'stream' then env_error(stream .. ' is a ' .. t .. ', expected a stream') end
  if not repair_stream_ids(stream, may_delete) then
    env_error(stream .. ' holds an entry with an id a day or more ahead: it must be set aside')
  end
end

-- The same for another's stream, which the caller may only append to (roles.py): it only
-- looks, and the stream's reader repairs ids a producer pushed ahead (bs1_trim).
local function expect_append_room(stream)
  local t = redis.call('TYPE', stream)['ok']
  if t == 'none' then return end
  if t ~= 'stream' then env_error(stream .. ' is a ' .. t .. ', expected a stream') end
  if id_less(tostring(now_ms() + FUTURE_MS) .. '-0', last_generated_id(stream)) then
    env_error(stream .. "'s ids were pushed ahead by a producer: its reader repairs them, retry")
  end
end

-- The caller's ACL user may run each command ({name, key, ...}) the call will run.
local function expect_rights(commands)
  for _, command in ipairs(commands) do
    if not redis.acl_check_cmd(unpack(command)) then
      env_error('NOPERM this user may not run ' .. command[1] .. ' on ' .. (command[2] or ''))
    end
  end
end
