--
-- The door: the one way clients and foreign producers submit a request or a return
-- (bs1_submit). It validates the event completely before anything is written, refuses a
-- request id Lending has recorded for another user or kind, and appends it to the
-- library's submissions list. Lending admits submissions into its inbox stream
-- (bs1_admit), so a client needs no right on any stream: an XADD, even one only to the
-- inbox, could trim it (MAXLEN, MINID), and Redis ACLs cannot refuse arguments, while an
-- RPUSH only appends. Part of bookstream_lending_v1 (loaded with lending.lua).
-- A raw RPUSH (the client role's one write) skips the door: the workers validate every
-- entry (bookstream_core.events), and their word is final. They read a key written twice
-- as its last value and a key's escapes, where the door refuses both (cjson and msgspec
-- agree on them, but a client's own scan of the text might not): a raw pusher gets what
-- it could have written plainly. Checking each push again at admission cost 17 % of the
-- drain's speed (measured), for no right a client lacks.

-- The wire contract's bounds and names (bookstream_core.events, ids, rejected), written
-- in when the library is read (functions.lua_constants).
local SCHEMA_VERSION, MAX_EVENT_BYTES = @SCHEMA_VERSION@, @MAX_EVENT_BYTES@
local MAX_BOOKS, MAX_ID_CHARS, MAX_REQUEST_ID = @MAX_BOOKS@, @MAX_ID_CHARS@, @MAX_REQUEST_ID@
local FIELDS, KINDS = @SUBMITTED_FIELDS@, @SUBMISSION_KINDS@
-- White space Python's str.strip() removes, beyond ASCII: NBSP, U+1680, U+2000-200A,
-- U+2028/2029 (refused anywhere), U+202F, U+205F, U+3000.
local UNICODE_SPACE = {'\194\160', '\225\154\128', '\226\128[\128-\138]', '\226\128\175',
  '\226\129\159', '\227\128\128'}

local function refuse(why) return error({err = 'BSBAD ' .. why}) end

-- Valid UTF-8 as the workers read it: no overlong form, no surrogate (CESU-8: breaker,
-- such an id passed the door and its sender never got an outcome), nothing past U+10FFFF.
-- Most events are ASCII: one scan says so (the door runs in every submission's path).
local function utf8_ok(s)
  if not string.find(s, '[\128-\255]') then return true end
  if string.find(s, '\224[\128-\159]') or string.find(s, '\237[\160-\191]')
      or string.find(s, '\240[\128-\143]') or string.find(s, '\244[\144-\191]') then
    return false
  end
  local rest = string.gsub(s, '[%z\1-\127]', '')
  rest = string.gsub(rest, '[\194-\223][\128-\191]', '')
  rest = string.gsub(rest, '[\224-\239][\128-\191][\128-\191]', '')
  rest = string.gsub(rest, '[\240-\244][\128-\191][\128-\191][\128-\191]', '')
  return rest == ''
end

local function spaced(s, ascii)
  if string.find(s, '^%s') or string.find(s, '%s$') then return true end
  if ascii then return false end
  for _, space in ipairs(UNICODE_SPACE) do
    if string.find(s, '^' .. space) or string.find(s, space .. '$') then return true end
  end
  return false
end

-- A user or book id: 1-200 characters, no control character (C0, DEL, C1), no line or
-- paragraph separator, no white space at either end.
local function check_id(what, s)
  if type(s) ~= 'string' or s == '' then refuse(what .. ' must be a non-empty string') end
  local ascii = not string.find(s, '[\128-\255]')
  local chars = #s
  if not ascii then chars = select(2, string.gsub(s, '[^\128-\191]', '')) end
  if chars > MAX_ID_CHARS then refuse(what .. ' is over ' .. MAX_ID_CHARS .. ' characters') end
  if string.find(s, '%c') or (not ascii and (string.find(s, '\194[\128-\159]')
      or string.find(s, '\226\128[\168\169]'))) then
    refuse(what .. ' contains a control character')
  end
  if spaced(s, ascii) then refuse(what .. ' starts or ends with white space') end
end

-- How many keys the JSON text writes (any depth), or nil if one has an escape: the text is
-- walked from quote to quote (a backslash outside a string is not JSON: cjson refused it).
local function keys_written(payload)
  local count, pos, inside, escaped = 0, 1, false, false
  while true do
    local i = string.find(payload, '["\\]', pos)
    if not i then return count end
    if not inside then
      inside, escaped, pos = true, false, i + 1
    elseif string.byte(payload, i) == 92 then  -- a backslash: skip what it escapes
      escaped, pos = true, i + 2
    else
      inside, pos = false, i + 1
      if string.find(payload, '^%s*:', pos) then
        if escaped then return nil end
        count = count + 1
      end
    end
  end
end

local function check_event(payload, library)
  if #payload > MAX_EVENT_BYTES then refuse('the event is over ' .. MAX_EVENT_BYTES .. ' bytes') end
  if not utf8_ok(payload) then refuse('the event is not UTF-8') end
  local ok, event = pcall(cjson.decode, payload)
  if not ok or type(event) ~= 'table' then refuse('the event is not a JSON object') end
  local fields = 0
  for field in pairs(event) do
    if not FIELDS[field] then refuse('unknown field ' .. cjson.encode(tostring(field))) end
    fields = fields + 1
  end
  -- Each key written once and plainly (no escape): cjson keeps the last of two keys and
  -- reads escapes, where the workers refuse both (breaker: a second, escaped "v" of 0x1
  -- passed and its sender waited for ever). A quote right after { or , starts a key.
  if keys_written(payload) ~= fields then
    refuse('each field must be written once, without escapes')
  end
  if event.v ~= SCHEMA_VERSION then refuse('schema version must be ' .. SCHEMA_VERSION) end
  -- cjson reads 1.0, 1e0, 01 or 0x1 as 1; the workers want the integer as written (the
  -- key is written once and plainly: checked above).
  local version = string.match(payload, '[{,]%s*"v"%s*:%s*([^,}%s]*)')
  if version ~= tostring(SCHEMA_VERSION) then
    refuse('schema version must be written ' .. SCHEMA_VERSION)
  end
  if not KINDS[event.type] then refuse('type must be ' .. @SUBMISSION_KIND_NAMES@) end
  local rid = event.id
  if type(rid) ~= 'string' or #rid > MAX_REQUEST_ID or not string.find(rid, '^[%w][%w_.:%-]*$') then
    refuse('id must be 1-' .. MAX_REQUEST_ID .. ' characters of letters, digits, _ . : - '
      .. 'starting with a letter or digit')
  end
  check_id('user', event.user)
  local books = event.books
  -- A JSON object decodes to a table with string keys (#books == 0): only arrays pass.
  if type(books) ~= 'table' or #books == 0 or #books > MAX_BOOKS then
    refuse('books must be a list of 1-' .. MAX_BOOKS .. ' book ids')
  end
  for _, book in ipairs(books) do check_id('book id', book) end
  -- null is no library named, as the workers read it (breaker: refused as "userdata").
  if event.library ~= nil and event.library ~= cjson.null and event.library ~= library then
    refuse('the event is for library ' .. cjson.encode(tostring(event.library)))
  end
  return event
end

-- The distinct books of a list, as a set, and how many.
local function book_set(books)
  local set, n = {}, 0
  for _, b in ipairs(books) do
    if type(b) == 'string' and not set[b] then set[b], n = true, n + 1 end
  end
  return set, n
end

-- Whether two lists name the same books (order and repeats aside).
local function same_books(a, b)
  local set, n = book_set(a)
  local other, m = book_set(b)
  if n ~= m then return false end
  for book in pairs(other) do
    if not set[book] then return false end
  end
  return true
end

-- Who already used this request id, as far as Lending has recorded it: the kind, user and
-- books of its outcome (a `rejected` one names nobody; one written before outcomes named
-- their books names none), or those of a request waiting for Shelving. Read only: the
-- door writes nothing but the submission, so a client needs no right on any key but the
-- submissions list (docs/security.md).
local function used_by(p, reqid)
  local stored = redis.call('GET', p .. 'outcome:' .. reqid)
  if stored then
    local ok, outcome = pcall(cjson.decode, stored)
    if ok and type(outcome) == 'table' and outcome.status ~= 'rejected' then
      local books = type(outcome.books) == 'table' and outcome.books or {}
      return outcome.kind, outcome.user, #books > 0 and books or nil
    end
  end
  local waiting = redis.call('HMGET', p .. 'lending:req:' .. reqid, 'user', 'held', 'paged',
    'unavailable')
  if not waiting[1] then return nil end
  -- Read as Lending reads it (take_waiting); a state it cannot read names no books here.
  local ok, books = pcall(function()
    return asked(decode_list(waiting[2] or '[]'), decode_list(waiting[3] or '[]'),
      decode_unavailable(waiting[4] or '[]'))
  end)
  return 'request', waiting[1], ok and books or nil
end

-- KEYS: the library's submissions list. ARGV: the event's JSON.
-- Returns the number of submissions waiting to be admitted, this one included. Errors:
-- BSBAD <why> (refused, nothing written), BSTAKEN <why> (the request id belongs to
-- another user or kind), BSENV <why> (Redis's trouble).
-- Two users racing with one new id both pass; Lending applies one (the first submitted,
-- unless batches of several workers, or one worker's batches in flight, overtake each
-- other: the first applied) and takes the other for a duplicate, and the other's client,
-- reading another user's outcome, refuses it (bookstream.client).
local function submit(keys, args)
  local queue = keys[1]
  local p = string.match(queue, '^(bs:{[^{}]+}:)lending:submissions$')
  if not p then
    return error({err = 'BSBAD the door takes a library\'s submissions list '
      .. '(bs:{NAME}:lending:submissions)'})
  end
  local event = check_event(args[1], string.match(p, '{(.*)}'))
  local doorbell = p .. 'lending:doorbell'
  expect_type(queue, 'list')
  expect_rights({{'RPUSH', queue}, {'PUBLISH', doorbell, ''}})
  local kind, user, books = used_by(p, event.id)
  if kind and (kind ~= event.type or user ~= event.user) then
    return error({err = 'BSTAKEN request id ' .. event.id .. ' was used by another user or '
      .. 'for another kind of event: choose another id'})
  end
  if books and not same_books(books, event.books) then
    return error({err = 'BSTAKEN request id ' .. event.id .. ' was used for other books: '
      .. 'choose another id'})
  end
  local waiting = redis.call('RPUSH', queue, args[1])
  redis.call('PUBLISH', doorbell, '')  -- wakes Lending's admission (bookstream_core.admitting)
  return waiting
end

-- Lending admits the oldest submissions into its inbox, in order, each as an entry with
-- one field `e` holding the submission as it was pushed, and removes them from the list,
-- in one step: none lost, none admitted twice, whichever Lending worker calls it. What
-- was pushed raw (past the door) is admitted unchecked: the workers judge every entry.
-- One submission is taken at a
-- time (LPOP), so that a call holds at most one oversized push beyond its byte budget.
-- One over MAX_EVENT_BYTES is admitted cut, as bs1_read would cut it (its first 8 KiB, its
-- size, the request id and kind it names), so that no worker ever receives it whole, not
-- even one waiting for a single entry (bookstream_core.rejected.as_admitted).
-- KEYS: submissions list, lending inbox. ARGV: at most this many, at most about this
-- many bytes (the call stops after the submission that passes it).
-- Returns {admitted, still waiting}.
local function admit(keys, args)
  local queue, inbox = keys[1], keys[2]
  local most, budget = tonumber(args[1]), tonumber(args[2])
  expect_type(queue, 'list')
  expect_stream_room(inbox, false)  -- ids pushed ahead: Lending's bs1_trim mends them
  expect_rights({{'LPOP', queue}, {'LLEN', queue}, {'XADD', inbox}})
  local moved, bytes = 0, 0
  while moved < most and bytes < budget do
    local item = redis.call('LPOP', queue)
    if not item then break end
    if #item <= MAX_EVENT_BYTES then
      redis.call('XADD', inbox, '*', 'e', item)
    else
      local rid, kind = named_by(item)
      redis.call('XADD', inbox, '*', 'e', string.sub(item, 1, CUT_BYTES), 'cut', #item,
        'id', rid or '', 'type', kind or '')
    end
    moved, bytes = moved + 1, bytes + #item
  end
  return {moved, redis.call('LLEN', queue)}
end

redis.register_function('bs1_submit', submit)
redis.register_function('bs1_admit', admit)
