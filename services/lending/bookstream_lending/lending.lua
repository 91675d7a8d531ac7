#!lua name=bookstream_lending_v1
--
-- Lending's state machine. Every event of lending's inbox is applied by
-- bs1_lending_apply in one atomic call that checks it was not applied already,
-- changes lending's state, emits the follow-up events (shelving's inbox, the
-- outcome, the domain event) and XACKs it. The key layout is mirrored in keys.py.
-- context.lua (a call's context, its checks, emitting events, stowing books), outcome.lua
-- (outcome JSON, storing and announcing) and the core prelude (ids, JSON strings, checks)
-- are loaded with this file as one library.
--
-- Book status (hash lending:book, field = book id; absent = not with lending):
--   storage          in the automated storage, available
--   held:<reqid>     reserved for an in-flight request (taken from storage)
--   paged:<reqid>    being fetched from the shelves for an in-flight request
--   lent:<user>      checked out to <user>
-- A book lending has no record of is on the shelves or travelling back to them.
-- Requests waiting for shelving are indexed by when they started (lending:inflight),
-- so that one shelving never answers is denied after a deadline (bs1_lending_expire).

-- A request denied with nothing reserved (early denial) or after its reservations went
-- back. Returns the result row for the worker.
local function deny(ctx, reqid, user, submitted_ms, reason, books, unavailable, hand)
  local json = outcome_json(reqid, 'request', 'denied', user, {
    books = books, unavailable = unavailable, reason = reason, in_hand = sorted(hand),
    limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'request', 'denied', reason, 0, ctx.now - submitted_ms, ctx.with_outcomes and json or ''}
end

-- Every reservation of a request goes back where it came from: storage books into the
-- storage while it has room (returns may have refilled it), the rest to the shelves.
-- from_shelf books that shelving may not have fetched yet are cancelled (`unfetch`)
-- rather than reshelved, so a fetch that never happened is never counted back.
local function release(ctx, reqid, from_storage, from_shelf, fetch_done)
  local to_shelf = {}
  stow(ctx, from_storage, redis.call('SCARD', ctx.storage), to_shelf)
  for _, b in ipairs(from_shelf) do redis.call('HDEL', ctx.book, b) end
  if fetch_done then
    for _, b in ipairs(from_shelf) do to_shelf[#to_shelf + 1] = b end
  elseif #from_shelf > 0 then
    emit_shelving(ctx, 'unfetch', reqid, reqid .. ':unfetch', from_shelf,
      ',"fetch":' .. q(reqid .. ':fetch'))
  end
  if #to_shelf > 0 then emit_shelving(ctx, 'reshelve', reqid, reqid .. ':rollback', to_shelf) end
end

-- Final decision of a request whose books are all in hand (held by it).
-- from_storage / from_shelf: books the request holds, by where they came from.
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
    -- All or nothing: other requests of the user were accepted meanwhile.
    status, reason = 'denied', 'limit'
    release(ctx, reqid, from_storage, from_shelf, true)
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
  -- Every book lent (the common case): the books asked for are the books lent.
  local books = (#lent > 0 and #unavailable == 0) and lent
    or asked(from_storage, from_shelf, unavailable)
  local json = outcome_json(reqid, 'request', status, user, {
    books = books, lent = lent,
    unavailable = unavailable, reason = reason,
    in_hand = sorted(hand), limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'request', status, reason or '', #lent, ctx.now - submitted_ms,
    ctx.with_outcomes and json or ''}
end

local function on_request(ctx, entry_id, reqid, user, books, hand, seen)
  if seen then
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
  local count = #hand
  -- Shelving hands over every book it is asked for (lending knows where every book
  -- it touched is), so a request that cannot fit is denied before anything moves.
  if #held + #paged == 0 then
    return deny(ctx, reqid, user, submitted, 'none_available', asked(held, paged, unavailable),
      unavailable, hand)
  elseif count + #held + #paged > ctx.limit then
    return deny(ctx, reqid, user, submitted, 'limit', asked(held, paged, unavailable),
      unavailable, hand)
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
  redis.call('ZADD', ctx.inflight, ctx.now, reqid)
  emit_shelving(ctx, 'fetch', reqid, reqid .. ':fetch', paged)
  return {'request', 'pending', '', #held + #paged, 0, ''}
end

local function on_return(ctx, entry_id, reqid, user, books, hand, seen)
  if seen then
    return {'return', 'duplicate', '', 0, 0, ''}
  end
  local lkey = loans_key(ctx, user)
  -- The user's loan set is the index of the 'lent:<user>' statuses (audited).
  local lent_to_user = {}
  for _, b in ipairs(hand) do lent_to_user[b] = true end
  local returned, not_held, to_shelf, seen = {}, {}, {}, {}
  for _, b in ipairs(books) do
    if not seen[b] then
      seen[b] = true
      if lent_to_user[b] then
        lent_to_user[b] = nil
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
  for b in pairs(lent_to_user) do in_hand[#in_hand + 1] = b end
  table.sort(in_hand)
  if #in_hand == 0 and #returned > 0 then redis.call('SREM', ctx.borrowers, user) end
  local status, reason = 'processed', nil
  if #returned == 0 then status, reason = 'denied', 'not_held' end
  table.sort(returned)
  local books = returned  -- every book named was taken back (the common case)
  if #not_held > 0 then
    books = {}
    for _, b in ipairs(returned) do books[#books + 1] = b end
    for _, b in ipairs(not_held) do books[#books + 1] = b end
    books = sorted(books)
  end
  local json = outcome_json(reqid, 'return', status, user, {
    books = books, returned = returned, not_held = not_held, reason = reason,
    in_hand = in_hand, limit = ctx.limit_s,
  })
  publish_outcome(ctx, reqid, json)
  return {'return', status, reason or '', #returned, ctx.now - entry_ms(entry_id),
    ctx.with_outcomes and json or ''}
end

-- A request waiting for shelving, read and checked whole before anything is written.
-- Returns nil and a row when there is none (answered already, or unknown).
local function take_waiting(ctx, type, reqid)
  local rkey = req_key(ctx, reqid)
  local state = redis.call('HMGET', rkey, 'user', 'submitted', 'held', 'paged', 'unavailable')
  if not state[1] then
    if redis.call('EXISTS', outcome_key(ctx, reqid)) == 1 then
      return nil, {type, 'duplicate', '', 0, 0, ''}
    end
    return nil, {type, 'orphan', 'unknown_request', 0, 0, ''}
  end
  local waiting = {user = state[1], submitted = tonumber(state[2]),
    held = decode_list(state[3]), paged = decode_list(state[4]),
    unavailable = decode_unavailable(state[5])}
  if not waiting.submitted then error('request state ' .. rkey .. ' is damaged') end
  expect_type(loans_key(ctx, waiting.user), 'set')
  waiting.hand = redis.call('SMEMBERS', loans_key(ctx, waiting.user))
  redis.call('DEL', rkey)
  redis.call('ZREM', ctx.inflight, reqid)
  return waiting
end

-- Shelving has taken the request's paged books off the shelves: they are in hand.
-- The reply's own book list is informational: what the request paged is in its state.
-- A reply for a request nobody made (a forged fetch) gives its books back to the
-- shelves: `unfetch` undoes the fetch if shelving applied it, else cancels it.
local function on_fetched(ctx, entry_id, reqid, user, books)
  local w, row = take_waiting(ctx, 'fetched', reqid)
  if not w then
    if row[2] == 'orphan' and #books > 0 then
      emit_shelving(ctx, 'unfetch', reqid, reqid .. ':unfetch', books,
        ',"fetch":' .. q(reqid .. ':fetch'))
    end
    return row
  end
  row = decide(ctx, reqid, w.user, w.submitted, w.held, w.paged, w.unavailable, w.hand)
  row[1] = 'fetched'
  return row
end

-- The request is given up: shelving set its fetch aside (`unfetched`, reason
-- fetch_failed) or never answered in time (shelving_timeout). It is denied and every
-- reservation goes back; a fetch still travelling is cancelled.
local function abandon(ctx, type, reqid, reason)
  local w, row = take_waiting(ctx, type, reqid)
  if not w then return row end
  release(ctx, reqid, w.held, w.paged, false)
  row = deny(ctx, reqid, w.user, w.submitted, reason, asked(w.held, w.paged, w.unavailable),
    w.unavailable, w.hand)
  row[1] = type
  return row
end

local function on_unfetched(ctx, entry_id, reqid)
  return abandon(ctx, 'unfetched', reqid, 'fetch_failed')
end

-- The user's loans (the handlers need the set) and whether the request id was seen
-- before (answered, or waiting for Shelving), read before the entry is acknowledged. A
-- key of the wrong type is not the entry's fault (BSENV: apply defers the entry); the
-- outcome's and the waiting request's types are checked only when one exists, which
-- keeps the common path at one EXISTS (a TYPE per entry cost the drain several %).
local function submission_state(ctx, reqid, user)
  local seen = false
  if redis.call('EXISTS', outcome_key(ctx, reqid), req_key(ctx, reqid)) > 0 then
    expect_type(outcome_key(ctx, reqid), 'string')
    expect_type(req_key(ctx, reqid), 'hash')
    seen = redis.call('EXISTS', req_key(ctx, reqid)) == 1 or answered(ctx, reqid)
  end
  local ok, hand = pcall(redis.call, 'SMEMBERS', loans_key(ctx, user))
  if not ok then env_error(loans_key(ctx, user) .. ' is not a set') end
  return hand, seen
end

local function request_state(ctx, reqid) expect_type(req_key(ctx, reqid), 'hash') end

-- One table of event kinds: the handler, and what it needs checked or read before the
-- entry is acknowledged (passed on to the handler).
local HANDLERS = {
  request = {on_request, submission_state},
  ['return'] = {on_return, submission_state},
  fetched = {on_fetched, request_state},
  unfetched = {on_unfetched, request_state},
}

-- KEYS: the stream read (lending inbox or replies), shelving inbox, domain events stream
-- ARGV: see new_ctx, then per event: entry id, type, request id, user, book count, books...
-- Returns one row per event: {type, status, reason, books, latency ms, outcome json or ''}
-- status: accepted|denied|processed|pending|duplicate|orphan|rejected (an orphan whose
-- client was answered `rejected`)|deferred|stale. The XACK comes first and fences the
-- entry: one no longer pending (applied by another worker, or set aside) is stale and
-- skipped, however late a frozen worker sends it. An entry whose own keys (its user's
-- loans, its outcome, its request's state) are of the wrong type is `deferred`: pending,
-- nothing written, while the rest of the batch goes on (breaker: one user's damaged key
-- stalled every user); it is claimed again later, and set aside after --max-deliveries.
local function apply(keys, args)
  local ctx = new_ctx(keys, args)
  check_environment(ctx)
  local rows = {}
  local i = 9
  while i <= #args do
    local entry_id, type, reqid, user = args[i], args[i + 1], args[i + 2], args[i + 3]
    local n = tonumber(args[i + 4])
    local books = {}
    for j = 1, n do books[j] = args[i + 4 + j] end
    i = i + 5 + n
    local handler = HANDLERS[type]
    local ready, prepared, seen = true, nil, nil
    if handler then ready, prepared, seen = pcall(handler[2], ctx, reqid, user) end
    local row
    if not ready then
      row = {type, 'deferred', failure_text(prepared), 0, 0, ''}
    elseif redis.call('XACK', ctx.stream, ctx.group, entry_id) == 0 and ctx.fence then
      row = {type, 'stale', '', 0, 0, ''}
    elseif not handler then
      row = {type, 'orphan', 'unknown_type', 0, 0, ''}
    elseif not ctx.kinds[type] then
      -- The worker checks it too: a reply is only ever applied from Shelving's stream.
      row = {type, 'orphan', 'wrong_stream', 0, 0, ''}
    else
      local ok, result = pcall(handler[1], ctx, entry_id, reqid, user, books, prepared, seen)
      row = ok and result or {type, 'orphan', 'script_error: ' .. tostring(result), 0, 0, ''}
    end
    if row[2] == 'orphan' then row[2] = set_aside(ctx, entry_id, type, reqid, row[3]) end
    rows[#rows + 1] = row
  end
  announce_outcomes(ctx)
  return rows
end

-- Deny the requests that have waited for shelving longer than the deadline.
-- KEYS: as apply. ARGV: as apply's first eight, then deadline ms, at most this many.
-- Returns one row per request given up, as apply's.
local function expire(keys, args)
  local ctx = new_ctx(keys, args)
  check_environment(ctx)
  local due = redis.call('ZRANGEBYSCORE', ctx.inflight, '-inf', ctx.now - tonumber(args[9]),
    'LIMIT', 0, tonumber(args[10]))
  local rows = {}
  for _, reqid in ipairs(due) do
    -- Nothing is written before a damaged request state is noticed: it is dropped from
    -- the index (the audit reports its books) instead of failing every later call.
    local ok, row = pcall(function()
      expect_type(req_key(ctx, reqid), 'hash')
      return abandon(ctx, 'expired', reqid, 'shelving_timeout')
    end)
    if not ok then row = {'expired', 'orphan', 'damaged_state: ' .. tostring(row), 0, 0, ''} end
    if row[2] ~= 'denied' then redis.call('ZREM', ctx.inflight, reqid) end
    rows[#rows + 1] = row
  end
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
redis.register_function('bs1_lending_expire', expire)
redis.register_function{function_name = 'bs1_lending_locate', callback = locate,
  flags = {'no-writes'}}
