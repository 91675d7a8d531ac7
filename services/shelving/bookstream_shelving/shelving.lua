#!lua name=bookstream_shelving_v1
--
-- Shelving's state: hash shelving:off, book -> how many times it is off the shelf
-- (absent = on the shelf). Lending keeps the authoritative record of every book it
-- holds and asks only for books it does not hold, so a fetch is always handed over:
-- a book still counted off the shelf when it is fetched is one whose reshelving is
-- still travelling in this inbox (it is taken straight from the return cart). Counting
-- instead of flagging makes fetch and reshelve commute, so workers may apply them in
-- any order (a claimed entry can arrive late) and still agree at quiescence: every
-- count is 0 or 1. The key layout is mirrored in keys.py.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function json_list(items)
  local parts = {}
  for i, item in ipairs(items) do parts[i] = cjson.encode(item) end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- KEYS: shelving inbox, lending inbox
-- ARGV: group, retention seconds, dead-letter maxlen,
--       then per event: entry id, type, request id, event id, book count, books...
-- Returns one row per event: {type, status, books}; status: applied|duplicate|orphan
local function apply(keys, args)
  local inbox, lending_inbox = keys[1], keys[2]
  local p = string.match(inbox, '^(.*)shelving:inbox$')
  local off = p .. 'shelving:off'
  -- Numbers stay the strings they came in as (a Lua number is printf-formatted per call).
  local group, retention, maxlen = args[1], args[2], args[3]
  local rows, acks = {}, {}
  local i = 4
  while i <= #args do
    local entry_id, type, reqid, eid = args[i], args[i + 1], args[i + 2], args[i + 3]
    local n = tonumber(args[i + 4])
    local books = {}
    for j = 1, n do books[j] = args[i + 4 + j] end
    i = i + 5 + n
    local ok, row = pcall(function()
      if type ~= 'fetch' and type ~= 'reshelve' then return {type, 'orphan', 0} end
      -- Idempotency: each emitted event has a unique eid.
      if not redis.call('SET', p .. 'shelving:done:' .. eid, '1', 'NX', 'EX', retention) then
        return {type, 'duplicate', 0}
      end
      local step = (type == 'fetch') and 1 or -1
      for _, b in ipairs(books) do
        if redis.call('HINCRBY', off, b, step) == 0 then redis.call('HDEL', off, b) end
      end
      if type == 'fetch' then
        redis.call('XADD', lending_inbox, '*', 'e',
          '{"v":1,"type":"fetched","id":' .. cjson.encode(reqid) .. ',"books":' .. json_list(books) .. '}')
      end
      return {type, 'applied', #books}
    end)
    if not ok then row = {type, 'orphan', 0, tostring(row)} end
    if row[2] == 'orphan' then
      redis.call('XADD', p .. 'shelving:dead', 'MAXLEN', '~', maxlen, '*',
        'stream', inbox, 'entry', entry_id, 'reason', row[4] or 'unknown_type', 'deliveries', '1',
        'time', tostring(now_ms()),
        'e', cjson.encode({type = type, id = reqid, eid = eid, books = books}))
    end
    rows[#rows + 1] = row
    acks[#acks + 1] = entry_id
  end
  if #acks > 0 then redis.call('XACK', inbox, group, unpack(acks)) end
  return rows
end

-- KEYS: shelving inbox. ARGV: book. Returns how many times the book is off the shelf.
local function off_count(keys, args)
  local p = string.match(keys[1], '^(.*)shelving:inbox$')
  return tonumber(redis.call('HGET', p .. 'shelving:off', args[1]) or '0')
end

redis.register_function('bs1_shelving_apply', apply)
redis.register_function{function_name = 'bs1_shelving_off_count', callback = off_count,
  flags = {'no-writes'}}
