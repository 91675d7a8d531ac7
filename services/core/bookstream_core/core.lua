#!lua name=bookstream_core_v1
--
-- Functions both services share: dead letters, worker-name locks, stream trimming.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_less(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end

-- Move entries aside: copy them to the dead-letter stream with the reason, XACK them,
-- and answer the requester with a `rejected` outcome when the request id is known and
-- nothing else answered it (no outcome yet, guard key absent: not a request in flight).
-- KEYS: inbox, dead-letter stream, domain events stream
-- ARGV: group, retention seconds, dead-letter maxlen, outcome prefix,
--       then per entry: entry id, reason, deliveries, request id, kind, guard key,
--       field count, field, value, ...
-- Returns one flag per entry: 1 if a rejected outcome was written for it, else 0.
local function dead_letter(keys, args)
  local inbox, dead, events = keys[1], keys[2], keys[3]
  local group, retention, maxlen, outcome_prefix = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  local now = tostring(now_ms())
  local answered = {}
  local i = 5
  while i <= #args do
    local entry_id, reason, deliveries, reqid, kind, guard = args[i], args[i + 1], args[i + 2],
      args[i + 3], args[i + 4], args[i + 5]
    local nfields = tonumber(args[i + 6])
    local row = {'XADD', dead, 'MAXLEN', '~', maxlen, '*', 'stream', inbox, 'entry', entry_id,
      'reason', reason, 'deliveries', deliveries, 'time', now, 'request_id', reqid, 'kind', kind}
    for j = 1, nfields do
      row[#row + 1] = 'f.' .. args[i + 6 + 2 * j - 1]
      row[#row + 1] = args[i + 6 + 2 * j]
    end
    i = i + 7 + 2 * nfields
    redis.call(unpack(row))
    redis.call('XACK', inbox, group, entry_id)
    answered[#answered + 1] = 0
    if reqid ~= '' and (kind == 'request' or kind == 'return') then
      local okey = outcome_prefix .. reqid
      if redis.call('EXISTS', okey) == 0 and (guard == '' or redis.call('EXISTS', guard) == 0) then
        local json = '{"request_id":' .. cjson.encode(reqid) .. ',"kind":"' .. kind
          .. '","status":"rejected","user":"","lent":[],"unavailable":[],"returned":[],'
          .. '"not_held":[],"reason":' .. cjson.encode(reason) .. ',"books_in_hand":[],"limit":null}'
        redis.call('SET', okey, json, 'EX', retention)
        redis.call('PUBLISH', okey, json)
        redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'e', json)
        answered[#answered] = 1
      end
    end
  end
  return answered
end

-- Worker names. The lock's value describes the holder; whoever holds the exact value
-- holds the name.
-- KEYS: lock. ARGV: value, ttl ms, force (0/1). Returns {1} or {0, current holder}.
local function lock_acquire(keys, args)
  if args[3] == '1' then
    redis.call('SET', keys[1], args[1], 'PX', args[2])
    return {1}
  end
  if redis.call('SET', keys[1], args[1], 'NX', 'PX', args[2]) then return {1} end
  return {0, redis.call('GET', keys[1])}
end

-- KEYS: lock. ARGV: value, ttl ms. Returns 1 renewed, 0 someone else holds it.
local function lock_renew(keys, args)
  local current = redis.call('GET', keys[1])
  if current == args[1] then
    redis.call('PEXPIRE', keys[1], args[2])
    return 1
  elseif not current then
    -- Expired while we were cut off from Redis, and nobody took it: take it back.
    redis.call('SET', keys[1], args[1], 'PX', args[2])
    return 1
  end
  return 0
end

-- KEYS: lock. ARGV: value. Returns 1 released, 0 not ours.
local function lock_release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

-- Trim what every group has processed: entries below the oldest one any group still
-- needs (its oldest pending entry, or the first one after its last delivered entry).
-- KEYS: stream. Returns the number of entries trimmed.
local function trim(keys, args)
  local stream = keys[1]
  if redis.call('EXISTS', stream) == 0 then return 0 end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  if #groups == 0 then return 0 end
  local floor = nil
  for _, g in ipairs(groups) do
    local info = {}
    for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
    local ms, seq = parse_id(info['last-delivered-id'])
    local candidate = ms .. '-' .. (seq + 1)
    local pending = redis.call('XPENDING', stream, info['name'])
    if pending[2] and id_less(pending[2], candidate) then candidate = pending[2] end
    if floor == nil or id_less(candidate, floor) then floor = candidate end
  end
  return redis.call('XTRIM', stream, 'MINID', floor)
end

-- Remove a consumer that is gone (its name lock expired) and holds nothing. Checking and
-- deleting in one call closes the race in which the consumer gets entries in between:
-- XGROUP DELCONSUMER would discard them.
-- KEYS: stream, the consumer's worker lock. ARGV: group, consumer, minimum idle ms.
-- Returns 1 if removed, 0 if kept (alive, holding entries, recently active or unknown).
local function retire_consumer(keys, args)
  if redis.call('EXISTS', keys[2]) == 1 then return 0 end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', keys[1], args[1])) do
    local info = {}
    for k = 1, #c, 2 do info[c[k]] = c[k + 1] end
    if info['name'] == args[2] then
      if info['pending'] == 0 and info['idle'] >= tonumber(args[3]) then
        redis.call('XGROUP', 'DELCONSUMER', keys[1], args[1], args[2])
        return 1
      end
      return 0
    end
  end
  return 0
end

redis.register_function('bs1_dead_letter', dead_letter)
redis.register_function('bs1_retire_consumer', retire_consumer)
redis.register_function('bs1_lock_acquire', lock_acquire)
redis.register_function('bs1_lock_renew', lock_renew)
redis.register_function('bs1_lock_release', lock_release)
redis.register_function('bs1_trim', trim)
