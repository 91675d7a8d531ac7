#!lua name=bookstream_shelving_v1
--
-- Shelving's state: hash shelving:off, book -> how many times it is off the shelf
-- (absent = on the shelf). Lending keeps the authoritative record of every book it
-- holds and asks only for books it does not hold, so a fetch is always handed over:
-- a book still counted off the shelf when it is fetched is one whose reshelving is
-- still travelling in this inbox (it is taken straight from the return cart). Counting
-- instead of flagging makes fetch and reshelve commute, so workers may apply them in
-- any order (a claimed entry can arrive late) and still agree at quiescence: every
-- count is 0 or 1. The key layout is mirrored in keys.py. The core prelude (ids, JSON
-- strings, checks) is loaded with this file as one library.
--
-- Events (each applied once: shelving:done:<eid> records it for the retention):
--   fetch     books leave the shelves for a request; answered `fetched` to lending
--   reshelve  books come back to the shelves
--   unfetch   lending gave up a request: its fetch is cancelled if it has not been
--             applied yet (marked done, so it never will be), else undone

local function count(off, books, step)
  for _, b in ipairs(books) do
    if redis.call('HINCRBY', off, b, step) == 0 then redis.call('HDEL', off, b) end
  end
end

local function on_fetch(c, reqid, books)
  count(c.off, books, 1)
  redis.call('XADD', c.replies, '*', 'e', '{"v":' .. c.v .. ',"type":"fetched","id":'
    .. q(reqid) .. ',"books":' .. json_list(books) .. '}')
end

local function on_reshelve(c, reqid, books) count(c.off, books, -1) end

local function on_unfetch(c, reqid, books, fetch_eid)
  if not redis.call('SET', c.p .. 'shelving:done:' .. fetch_eid, '1', 'NX', 'EX', c.retention) then
    count(c.off, books, -1)
  end
end

local HANDLERS = {fetch = on_fetch, reshelve = on_reshelve, unfetch = on_unfetch}

-- KEYS: shelving inbox, lending's replies stream
-- ARGV: group, retention seconds, dead-letter maxlen, schema version,
--       then per event: entry id, type, request id, event id, fetch id ('' unless
--       unfetch), book count, books...
-- Returns one row per event: {type, status, books}; status: applied|duplicate|orphan|
-- stale. The XACK comes first and fences the entry: one no longer pending (applied by
-- another worker, or set aside) is stale and skipped, however late it is sent.
local function apply(keys, args)
  local inbox, replies = keys[1], keys[2]
  local p = string.match(inbox, '^(.*)shelving:inbox$')
  -- Numbers stay the strings they came in as (a Lua number is printf-formatted per call).
  local c = {p = p, off = p .. 'shelving:off', replies = replies,
    retention = args[2], v = args[4]}
  local group, maxlen = args[1], args[3]
  expect_type(c.off, 'hash')
  expect_append_room(replies)
  expect_stream_room(p .. 'shelving:dead', true)
  expect_rights({{'XACK', inbox}, {'XADD', replies}, {'XADD', p .. 'shelving:dead'},
    {'HINCRBY', c.off}, {'HDEL', c.off}, {'SET', p .. 'shelving:done:x'}})
  local rows = {}
  local i = 5
  while i <= #args do
    local entry_id, type, reqid, eid, fetch_eid = args[i], args[i + 1], args[i + 2],
      args[i + 3], args[i + 4]
    local n = tonumber(args[i + 5])
    local books = {}
    for j = 1, n do books[j] = args[i + 5 + j] end
    i = i + 6 + n
    local handler = HANDLERS[type]
    local row
    if redis.call('XACK', inbox, group, entry_id) == 0 then
      row = {type, 'stale', 0}
    elseif not handler then
      row = {type, 'orphan', 0, 'unknown_type'}
    elseif not redis.call('SET', p .. 'shelving:done:' .. eid, '1', 'NX', 'EX', c.retention) then
      row = {type, 'duplicate', 0}
    else
      -- Nothing above can fail once the checks passed; pcall guards against a bug.
      local ok, err = pcall(handler, c, reqid, books, fetch_eid)
      row = ok and {type, 'applied', #books} or {type, 'orphan', 0, 'script_error: ' .. tostring(err)}
    end
    if row[2] == 'orphan' then
      redis.call('XADD', p .. 'shelving:dead', 'MAXLEN', '~', maxlen, '*',
        'stream', inbox, 'entry', entry_id, 'reason', row[4], 'deliveries', '1',
        'time', tostring(now_ms()),
        'e', cjson.encode({type = type, id = reqid, eid = eid, books = books}))
    end
    rows[#rows + 1] = row
  end
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
