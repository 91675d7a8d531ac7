#!lua name=bookstream_lending_v1
--
-- Lending's state machine. Every event of lending's inbox is applied by
-- bs1_lending_apply in one atomic call that checks it was not applied already,
-- changes lending's state, emits the follow-up events (shelving's inbox, the
-- outcome, the domain event) and XACKs it. The key layout is mirrored in keys.py.
--
-- Book status (hash lending:book, field = book id; absent = not with lending):
--   storage          in the automated storage, available
--   held:<reqid>     reserved for an in-flight request (taken from storage)
--   paged:<reqid>    being fetched from the shelves for an in-flight request
--   lent:<user>      checked out to <user>
-- A book lending has no record of is on the shelves or travelling back to them.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function entry_ms(entry_id)
  return tonumber(string.match(entry_id, '^(%d+)')) or 0
end

-- A JSON string. Ids rarely need escaping, and wrapping them in quotes costs far less
-- than cjson.encode (the outcome JSON is a large share of the script's time).
local function q(s)
  if string.find(s, '[%c"\\]') then return cjson.encode(s) end
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

local function decode_unavailable(raw)
  local items = {}
  for i, item in ipairs(cjson.decode(raw)) do items[i] = {item.book, item.reason} end
  return items
end

local function decode_list(raw)
  if raw == '[]' then return {} end
  return cjson.decode(raw)
end

local function sorted(items)
  table.sort(items)
  return items
end

-- ctx: prefix, keys, settings of this call
local function new_ctx(keys, args)
  local p = string.match(keys[1], '^(.*)lending:inbox$')
  return {
    p = p,
    inbox = keys[1],
    shelving_inbox = keys[2],
    events = keys[3],
    book = p .. 'lending:book',
    storage = p .. 'lending:storage',
    borrowers = p .. 'lending:borrowers',
    group = args[1],
    limit = tonumber(args[2]),
    capacity = tonumber(args[3]),
    -- Passed on to Redis as the strings they came in as: a Lua number would be
    -- formatted back with printf on every call.
    retention = args[4],
    events_maxlen = args[5],
    limit_s = args[2],
    with_outcomes = args[6] == '1',
    now = now_ms(),
    announce = {},
    announce_json = {},
  }
end

local function loans_key(ctx, user) return ctx.p .. 'lending:loans:' .. user end
local function req_key(ctx, reqid) return ctx.p .. 'lending:req:' .. reqid end
local function outcome_key(ctx, reqid) return ctx.p .. 'outcome:' .. reqid end

-- Store the outcome (bounded by retention), append it to the domain event stream and
-- queue its announcement (announce_outcomes, at the end of the call).
local function publish_outcome(ctx, reqid, json)
  local key = outcome_key(ctx, reqid)
  redis.call('SET', key, json, 'EX', ctx.retention)
  redis.call('XADD', ctx.events, 'MAXLEN', '~', ctx.events_maxlen, '*', 'e', json)
  local n = #ctx.announce + 1
  ctx.announce[n] = key
  ctx.announce_json[n] = json
end

-- PUBLISH each outcome someone listens for. Asking Redis once per call who listens
-- (NUMSUB for every channel, NUMPAT for pattern listeners) is much cheaper than one
-- PUBLISH per outcome when, as in a backlog, most requesters are not waiting. Clients
-- subscribe before they submit and poll the stored outcome as well, so an outcome
-- nobody listens for is never missed.
local function announce_outcomes(ctx)
  local keys = ctx.announce
  if #keys == 0 then return end
  local everyone = redis.call('PUBSUB', 'NUMPAT') > 0
  local counts = everyone and {} or redis.call('PUBSUB', 'NUMSUB', unpack(keys))
  for i, key in ipairs(keys) do
    if everyone or counts[2 * i] > 0 then redis.call('PUBLISH', key, ctx.announce_json[i]) end
  end
end

local EMPTY = {}

local function outcome_json(reqid, kind, status, user, fields)
  return '{"request_id":' .. q(reqid)
    .. ',"kind":"' .. kind .. '","status":"' .. status .. '"'
    .. ',"user":' .. q(user)
    .. ',"lent":' .. json_list(fields.lent or EMPTY)
    .. ',"unavailable":' .. json_unavailable(fields.unavailable or EMPTY)
    .. ',"returned":' .. json_list(fields.returned or EMPTY)
    .. ',"not_held":' .. json_list(fields.not_held or EMPTY)
    .. ',"reason":' .. (fields.reason and ('"' .. fields.reason .. '"') or 'null')
    .. ',"books_in_hand":' .. json_list(fields.in_hand or EMPTY)
    .. ',"limit":' .. (fields.limit or 'null')
    .. '}'
end

local function emit_shelving(ctx, type, reqid, eid, books)
  local json = '{"v":1,"type":"' .. type .. '","id":' .. q(reqid)
    .. ',"eid":' .. q(eid) .. ',"books":' .. json_list(books) .. '}'
  redis.call('XADD', ctx.shelving_inbox, '*', 'e', json)
end

-- Put books the arm holds away: into the automated storage while it has room, the rest
-- onto the return cart (to_shelf) for shelving. Returns the storage's new fill.
local function stow(ctx, books, in_storage, to_shelf)
  for _, b in ipairs(books) do
    if in_storage < ctx.capacity then
      in_storage = in_storage + 1
      redis.call('HSET', ctx.book, b, 'storage')
      redis.call('SADD', ctx.storage, b)
    else
      redis.call('HDEL', ctx.book, b)
      to_shelf[#to_shelf + 1] = b
    end
  end
  return in_storage
end

-- Final decision of a request whose books are all in hand (held by it).
-- from_storage / from_shelf: books the request holds, by where they came from.
-- Returns the result row for the worker.
local function deny(ctx, reqid, user, submitted_ms, reason, unavailable, hand)
  local json = outcome_json(reqid, 'request', 'denied', user, {
    unavailable = unavailable, reason = reason, in_hand = sorted(hand), limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'request', 'denied', reason, 0, ctx.now - submitted_ms, ctx.with_outcomes and json or ''}
end

-- hand: the user's loans when the caller has just read them (nil: read them here).
local function decide(ctx, reqid, user, submitted_ms, from_storage, from_shelf, unavailable, hand)
  local lkey = loans_key(ctx, user)
  hand = hand or redis.call('SMEMBERS', lkey)
  local count = #hand
  local found = #from_storage + #from_shelf
  local status, reason
  if found == 0 then
    status, reason = 'denied', 'none_available'
  elseif count + found > ctx.limit then
    status, reason = 'denied', 'limit'
    -- All or nothing: every reservation goes back where it came from. Returns may
    -- have refilled the storage meanwhile; what no longer fits goes to the shelves.
    local to_shelf = {}
    stow(ctx, from_storage, redis.call('SCARD', ctx.storage), to_shelf)
    for _, b in ipairs(from_shelf) do
      redis.call('HDEL', ctx.book, b)
      to_shelf[#to_shelf + 1] = b
    end
    if #to_shelf > 0 then
      emit_shelving(ctx, 'reshelve', reqid, reqid .. ':rollback', to_shelf)
    end
  else
    status = 'accepted'
  end
  local lent = {}
  if status == 'accepted' then
    local value = 'lent:' .. user
    for _, b in ipairs(from_storage) do lent[#lent + 1] = b end
    for _, b in ipairs(from_shelf) do lent[#lent + 1] = b end
    for _, b in ipairs(lent) do
      redis.call('HSET', ctx.book, b, value)
      redis.call('SADD', lkey, b)
      hand[#hand + 1] = b
    end
    redis.call('SADD', ctx.borrowers, user)
    table.sort(lent)
  end
  local json = outcome_json(reqid, 'request', status, user, {
    lent = lent, unavailable = unavailable, reason = reason,
    in_hand = sorted(hand), limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'request', status, reason or '', #lent, ctx.now - submitted_ms,
    ctx.with_outcomes and json or ''}
end

local function on_request(ctx, entry_id, reqid, user, books)
  if redis.call('EXISTS', outcome_key(ctx, reqid), req_key(ctx, reqid)) > 0 then
    return {'request', 'duplicate', '', 0, 0, ''}
  end
  local held, paged, unavailable, seen = {}, {}, {}, {}
  local statuses = redis.call('HMGET', ctx.book, unpack(books))
  for i, b in ipairs(books) do
    if not seen[b] then
      seen[b] = true
      local st = statuses[i]
      if not st then
        paged[#paged + 1] = b
      elseif st == 'storage' then
        held[#held + 1] = b
      elseif st == 'lent:' .. user then
        unavailable[#unavailable + 1] = {b, 'held_by_you'}
      elseif string.sub(st, 1, 5) == 'lent:' then
        unavailable[#unavailable + 1] = {b, 'lent'}
      else
        unavailable[#unavailable + 1] = {b, 'reserved'}
      end
    end
  end
  local submitted = entry_ms(entry_id)
  local hand = redis.call('SMEMBERS', loans_key(ctx, user))
  local count = #hand
  -- Shelving hands over every book it is asked for (lending knows where every book
  -- it touched is), so a request that cannot fit is denied before anything moves.
  if #held + #paged == 0 then
    return deny(ctx, reqid, user, submitted, 'none_available', unavailable, hand)
  elseif count + #held + #paged > ctx.limit then
    return deny(ctx, reqid, user, submitted, 'limit', unavailable, hand)
  end
  for _, b in ipairs(held) do
    redis.call('HSET', ctx.book, b, 'held:' .. reqid)
    redis.call('SREM', ctx.storage, b)
  end
  if #paged == 0 then
    return decide(ctx, reqid, user, submitted, held, {}, unavailable, hand)
  end
  for _, b in ipairs(paged) do redis.call('HSET', ctx.book, b, 'paged:' .. reqid) end
  redis.call('HSET', req_key(ctx, reqid),
    'user', user, 'submitted', submitted, 'held', json_list(held),
    'paged', json_list(paged), 'unavailable', json_unavailable(unavailable))
  emit_shelving(ctx, 'fetch', reqid, reqid .. ':fetch', paged)
  return {'request', 'pending', '', #held + #paged, 0, ''}
end

local function on_return(ctx, entry_id, reqid, user, books)
  if redis.call('EXISTS', outcome_key(ctx, reqid), req_key(ctx, reqid)) > 0 then
    return {'return', 'duplicate', '', 0, 0, ''}
  end
  local lkey = loans_key(ctx, user)
  -- The user's loan set is the index of the 'lent:<user>' statuses (audited).
  local held = {}
  for _, b in ipairs(redis.call('SMEMBERS', lkey)) do held[b] = true end
  local returned, not_held, to_shelf, seen = {}, {}, {}, {}
  for _, b in ipairs(books) do
    if not seen[b] then
      seen[b] = true
      if held[b] then
        held[b] = nil
        returned[#returned + 1] = b
        redis.call('SREM', lkey, b)
      else
        not_held[#not_held + 1] = b
      end
    end
  end
  if #returned > 0 then
    -- Returned books refill the automated storage; the rest go back to the shelves.
    stow(ctx, returned, redis.call('SCARD', ctx.storage), to_shelf)
    if #to_shelf > 0 then emit_shelving(ctx, 'reshelve', reqid, reqid .. ':reshelve', to_shelf) end
  end
  local in_hand = {}
  for b in pairs(held) do in_hand[#in_hand + 1] = b end
  table.sort(in_hand)
  if #in_hand == 0 and #returned > 0 then redis.call('SREM', ctx.borrowers, user) end
  local status, reason = 'processed', nil
  if #returned == 0 then status, reason = 'denied', 'not_held' end
  table.sort(returned)
  local json = outcome_json(reqid, 'return', status, user, {
    returned = returned, not_held = not_held, reason = reason, in_hand = in_hand,
    limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'return', status, reason or '', #returned, ctx.now - entry_ms(entry_id),
    ctx.with_outcomes and json or ''}
end

-- Shelving has taken the request's paged books off the shelves: they are in hand.
-- The reply's own book list is informational: what the request paged is in its state.
local function on_fetched(ctx, entry_id, reqid)
  local rkey = req_key(ctx, reqid)
  local state = redis.call('HMGET', rkey, 'user', 'submitted', 'held', 'paged', 'unavailable')
  if not state[1] then
    if redis.call('EXISTS', outcome_key(ctx, reqid)) == 1 then
      return {'fetched', 'duplicate', '', 0, 0, ''}
    end
    return {'fetched', 'orphan', 'unknown_request', 0, 0, ''}
  end
  local user, submitted = state[1], tonumber(state[2])
  local held, paged = decode_list(state[3]), decode_list(state[4])
  redis.call('DEL', rkey)
  local result = decide(ctx, reqid, user, submitted, held, paged, decode_unavailable(state[5]))
  result[1] = 'fetched'
  return result
end

-- A row the worker could not even validate never reaches here (it is dead-lettered
-- by the core library); this guards against an unknown type all the same.
local function dead_letter(ctx, entry_id, reason, payload)
  redis.call('XADD', ctx.p .. 'lending:dead', 'MAXLEN', '~', ctx.events_maxlen, '*',
    'stream', ctx.inbox, 'entry', entry_id, 'reason', reason, 'deliveries', '1',
    'time', tostring(ctx.now), 'e', payload)
end

local HANDLERS = {request = on_request, ['return'] = on_return, fetched = on_fetched}

-- KEYS: lending inbox, shelving inbox, domain events stream
-- ARGV: group, user limit, storage capacity, retention seconds, events maxlen,
--       '1' to return the outcomes' JSON (for the worker's log) or '0',
--       then per event: entry id, type, request id, user, book count, books...
-- Returns one row per event: {type, status, reason, books, latency ms, outcome json or ''}
-- status: accepted|denied|processed|pending|duplicate|orphan
local function apply(keys, args)
  local ctx = new_ctx(keys, args)
  local rows, acks = {}, {}
  local i = 7
  while i <= #args do
    local entry_id, type, reqid, user = args[i], args[i + 1], args[i + 2], args[i + 3]
    local n = tonumber(args[i + 4])
    local books = {}
    for j = 1, n do books[j] = args[i + 4 + j] end
    i = i + 5 + n
    local handler = HANDLERS[type]
    local ok, row
    if handler then
      ok, row = pcall(handler, ctx, entry_id, reqid, user, books)
    else
      ok, row = true, {type, 'orphan', 'unknown_type', 0, 0, ''}
    end
    if not ok then row = {type, 'orphan', 'script_error: ' .. tostring(row), 0, 0, ''} end
    if row[2] == 'orphan' then
      dead_letter(ctx, entry_id, row[3], cjson.encode({type = type, id = reqid, user = user, books = books}))
    end
    rows[#rows + 1] = row
    acks[#acks + 1] = entry_id
  end
  if #acks > 0 then redis.call('XACK', ctx.inbox, ctx.group, unpack(acks)) end
  announce_outcomes(ctx)
  return rows
end

-- Read-only views for status, locate and audit.
-- KEYS: lending inbox. ARGV: book. Returns the status string or false.
local function locate(keys, args)
  local p = string.match(keys[1], '^(.*)lending:inbox$')
  return redis.call('HGET', p .. 'lending:book', args[1])
end

redis.register_function('bs1_lending_apply', apply)
redis.register_function{function_name = 'bs1_lending_locate', callback = locate,
  flags = {'no-writes'}}
