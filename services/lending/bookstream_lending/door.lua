--
-- The door: the one way clients and foreign producers put a request or a return into
-- lending's inbox (bs1_submit). It validates the event completely before anything is
-- written, refuses a request id Lending has recorded for another user or kind, and
-- appends it with an id Redis assigns. Part of bookstream_lending_v1 (loaded with
-- lending.lua).
-- The workers validate every entry again (bookstream_core.events): the door may refuse
-- more than they do, never less.

-- bookstream_core.events.SCHEMA_VERSION, written in when the library is read (read_library).
local SCHEMA_VERSION = @SCHEMA_VERSION@
local MAX_EVENT_BYTES, MAX_BOOKS, MAX_ID_CHARS, MAX_REQUEST_ID = 65536, 32, 200, 64
local FIELDS = {v = true, type = true, id = true, user = true, books = true, library = true}
local KINDS = {request = true, ['return'] = true}
-- White space Python's str.strip() removes, beyond ASCII: NBSP, U+1680, U+2000-200A,
-- U+2028/2029 (refused anywhere), U+202F, U+205F, U+3000.
local UNICODE_SPACE = {'\194\160', '\225\154\128', '\226\128[\128-\138]', '\226\128\175',
  '\226\129\159', '\227\128\128'}

local function refuse(why) return error({err = 'BSBAD ' .. why}) end

-- Valid UTF-8 (overlong and surrogate forms aside: the workers catch those).
local function utf8_ok(s)
  local rest = string.gsub(s, '[%z\1-\127]', '')
  rest = string.gsub(rest, '[\194-\223][\128-\191]', '')
  rest = string.gsub(rest, '[\224-\239][\128-\191][\128-\191]', '')
  rest = string.gsub(rest, '[\240-\244][\128-\191][\128-\191][\128-\191]', '')
  return rest == ''
end

local function spaced(s)
  if string.find(s, '^%s') or string.find(s, '%s$') then return true end
  for _, space in ipairs(UNICODE_SPACE) do
    if string.find(s, '^' .. space) or string.find(s, space .. '$') then return true end
  end
  return false
end

-- A user or book id: 1-200 characters, no control character (C0, DEL, C1), no line or
-- paragraph separator, no white space at either end.
local function check_id(what, s)
  if type(s) ~= 'string' or s == '' then refuse(what .. ' must be a non-empty string') end
  local _, chars = string.gsub(s, '[^\128-\191]', '')
  if chars > MAX_ID_CHARS then refuse(what .. ' is over ' .. MAX_ID_CHARS .. ' characters') end
  if string.find(s, '%c') or string.find(s, '\194[\128-\159]')
      or string.find(s, '\226\128[\168\169]') then
    refuse(what .. ' contains a control character')
  end
  if spaced(s) then refuse(what .. ' starts or ends with white space') end
end

local function check_event(payload, library)
  if #payload > MAX_EVENT_BYTES then refuse('the event is over ' .. MAX_EVENT_BYTES .. ' bytes') end
  if not utf8_ok(payload) then refuse('the event is not UTF-8') end
  local ok, event = pcall(cjson.decode, payload)
  if not ok or type(event) ~= 'table' then refuse('the event is not a JSON object') end
  for field in pairs(event) do
    if not FIELDS[field] then refuse('unknown field ' .. cjson.encode(tostring(field))) end
  end
  if event.v ~= SCHEMA_VERSION then refuse('schema version must be ' .. SCHEMA_VERSION) end
  if not KINDS[event.type] then refuse('type must be request or return') end
  local rid = event.id
  if type(rid) ~= 'string' or #rid > MAX_REQUEST_ID or not string.find(rid, '^[%w][%w_.:%-]*$') then
    refuse('id must be 1-64 characters of letters, digits, _ . : - starting with a letter or digit')
  end
  check_id('user', event.user)
  local books = event.books
  -- A JSON object decodes to a table with string keys (#books == 0): only arrays pass.
  if type(books) ~= 'table' or #books == 0 or #books > MAX_BOOKS then
    refuse('books must be a list of 1-' .. MAX_BOOKS .. ' book ids')
  end
  for _, book in ipairs(books) do check_id('book id', book) end
  if event.library ~= nil and event.library ~= library then
    refuse('the event is for library ' .. cjson.encode(tostring(event.library)))
  end
  return event
end

-- Who already used this request id, as far as Lending has recorded it: the user and kind
-- of its outcome (a `rejected` one names nobody), or the user of a request waiting for
-- Shelving. Read only: the door writes nothing but the entry, so a client needs no right
-- on any key but the inbox (docs/security.md).
local function used_by(p, reqid)
  local stored = redis.call('GET', p .. 'outcome:' .. reqid)
  if stored then
    local ok, outcome = pcall(cjson.decode, stored)
    if ok and type(outcome) == 'table' and outcome.status ~= 'rejected' then
      return outcome.kind, outcome.user
    end
  end
  local waiting = redis.call('HGET', p .. 'lending:req:' .. reqid, 'user')
  if waiting then return 'request', waiting end
  return nil
end

-- KEYS: lending inbox. ARGV: the event's JSON.
-- Returns the new entry's id. Errors: BSBAD <why> (refused, nothing written), BSTAKEN
-- <why> (the request id belongs to another user or kind), BSENV <why> (Redis's trouble).
-- Two users racing with one new id both pass; Lending applies the first and takes the
-- second for a duplicate, and the second's client, reading another user's outcome,
-- refuses it (bookstream.client).
local function submit(keys, args)
  local inbox = keys[1]
  local p = string.match(inbox, '^(bs:{[^{}]+}:)lending:inbox$')
  if not p then
    return error({err = 'BSBAD the door takes a library\'s lending inbox (bs:{NAME}:lending:inbox)'})
  end
  local event = check_event(args[1], string.match(p, '{(.*)}'))
  expect_append_room(inbox)  -- Lending's bs1_trim repairs it
  expect_rights({{'XADD', inbox}})
  local kind, user = used_by(p, event.id)
  if kind and (kind ~= event.type or user ~= event.user) then
    return error({err = 'BSTAKEN request id ' .. event.id .. ' was used by another user or '
      .. 'for another kind of event: choose another id'})
  end
  return redis.call('XADD', inbox, '*', 'e', args[1])
end

redis.register_function('bs1_submit', submit)
