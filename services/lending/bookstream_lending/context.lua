--
-- A lending call's context, what it checks before writing, and the two ways books leave
-- the arm: events to shelving and the automated storage. Part of bookstream_lending_v1
-- (loaded with lending.lua, after outcome.lua).

-- Which kinds may arrive on which stream (bookstream_lending.kinds, written in when read).
local STREAM_KINDS = @LENDING_STREAM_KINDS@

-- ctx: prefix, keys, settings of this call
-- ARGV[1..8]: group, user limit, storage capacity, retention seconds, events maxlen,
--             '1' to return the outcomes' JSON (for the worker's log) or '0', schema version,
--             '1' to fence (skip an entry its XACK finds no longer pending) or '0' (only
--             `bookstream bench --reference`, whose calls name entries that never existed)
-- KEYS[1] is the stream the call's entries were read from: the inbox (clients' requests
-- and returns, through the door) or the replies (Shelving's alone); `kinds` are the
-- event kinds that may arrive on it.
local function new_ctx(keys, args)
  local p, stream = string.match(keys[1], '^(.*)lending:(%a+)$')
  return {
    p = p,
    stream = keys[1],
    kinds = STREAM_KINDS[stream] or {},
    shelving_inbox = keys[2],
    events = keys[3],
    book = p .. 'lending:book',
    storage = p .. 'lending:storage',
    borrowers = p .. 'lending:borrowers',
    inflight = p .. 'lending:inflight',
    group = args[1],
    limit = tonumber(args[2]),
    capacity = tonumber(args[3]),
    -- Passed on to Redis as the strings they came in as: a Lua number would be
    -- formatted back with printf on every call.
    retention = args[4],
    events_maxlen = args[5],
    limit_s = args[2],
    with_outcomes = args[6] == '1',
    v = args[7],
    fence = args[8] ~= '0',
    now = now_ms(),
    announce = {},
    announce_json = {},
  }
end

local function loans_key(ctx, user) return ctx.p .. 'lending:loans:' .. user end
local function req_key(ctx, reqid) return ctx.p .. 'lending:req:' .. reqid end

-- Everything a handler writes to, checked once per call before anything is written.
local function check_environment(ctx)
  expect_type(ctx.book, 'hash')
  expect_type(ctx.storage, 'set')
  expect_type(ctx.borrowers, 'set')
  expect_type(ctx.inflight, 'zset')
  expect_append_room(ctx.shelving_inbox)
  expect_stream_room(ctx.events, true)
  expect_stream_room(ctx.p .. 'lending:dead', true)
  local req, loans, outcome = ctx.p .. 'lending:req:x', ctx.p .. 'lending:loans:x',
    ctx.p .. 'outcome:x'
  -- Reads too: some run after a handler's first write.
  expect_rights({{'XACK', ctx.stream}, {'XRANGE', ctx.stream}, {'XADD', ctx.shelving_inbox}, {'XADD', ctx.events},
    {'XADD', ctx.p .. 'lending:dead'}, {'HSET', ctx.book}, {'HDEL', ctx.book},
    {'HMGET', ctx.book}, {'SADD', ctx.storage}, {'SREM', ctx.storage}, {'SCARD', ctx.storage},
    {'SADD', ctx.borrowers}, {'SREM', ctx.borrowers}, {'ZADD', ctx.inflight},
    {'ZREM', ctx.inflight}, {'ZRANGEBYSCORE', ctx.inflight}, {'SADD', loans},
    {'SREM', loans}, {'SMEMBERS', loans}, {'HSET', req}, {'HMGET', req}, {'DEL', req},
    {'EXISTS', req}, {'TYPE', req}, {'SET', outcome}, {'GET', outcome}, {'EXISTS', outcome},
    {'PUBLISH', outcome}, {'PUBSUB', 'NUMSUB', outcome}, {'PUBSUB', 'NUMPAT'}})
end

local function emit_shelving(ctx, type, reqid, eid, books, extra)
  redis.call('XADD', ctx.shelving_inbox, '*', 'e', '{"v":' .. ctx.v .. ',"type":"' .. type
    .. '","id":' .. q(reqid) .. ',"eid":' .. q(eid) .. (extra or '')
    .. ',"books":' .. json_list(books) .. '}')
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

