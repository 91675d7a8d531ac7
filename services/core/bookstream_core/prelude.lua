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

-- An XADD with '*' to `stream` can still succeed (a producer may have set the largest
-- possible id, after which every XADD fails).
local function expect_stream_room(stream)
  local t = redis.call('TYPE', stream)['ok']
  if t == 'none' then return end
  if t ~= 'stream' then env_error(stream .. ' is a ' .. t .. ', expected a stream') end
  local info = redis.call('XINFO', 'STREAM', stream)
  for k = 1, #info, 2 do
    if info[k] == 'last-generated-id' then
      local ms = split_id(info[k + 1])
      if ms == MAX_PART then env_error(stream .. ' has used up its stream ids') end
      return
    end
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
