#!lua name=bookstream_core_v1
--
-- Functions both services share: dead letters, worker-name locks, stream trimming.

-- Move entries aside: copy them to the dead-letter stream with the reason, XACK them,
-- and answer the requester with a `rejected` outcome when the request id is known and
-- nothing else answered it (no outcome yet, guard key absent: not a request in flight).
-- A fetch set aside by shelving is reported to lending (`unfetched`), which denies its
-- request and puts its books back. An entry that is no longer pending (another worker
-- applied or set it aside meanwhile) is skipped: the XACK comes first and fences it.
-- KEYS: the stream set aside from, dead-letter stream, domain events stream, and for
--       shelving's entries Lending's replies stream (where a failed fetch is reported)
-- ARGV: group, retention seconds, dead-letter maxlen, outcome prefix, schema version,
--       then per entry: entry id, reason, deliveries, request id, kind, guard key,
--       digest of its `e` field ('' if none: events.submission_digest), the entry's field
--       count, n = fields copied (at most 16), n x (field, value)
-- Returns one flag per entry: 1 if a rejected outcome was written for it, 2 if lending
-- was told of a failed fetch, 0 otherwise, -1 if it was skipped (no longer pending).
local MAX_DEAD_FIELDS = 16
-- The kinds clients submit (bookstream_core.events.SUBMISSIONS, written in when read).
local SUBMITTED = @SUBMISSION_KINDS@
local function dead_letter(keys, args)
  local inbox, dead, events, replies = keys[1], keys[2], keys[3], keys[4]
  local group, retention, maxlen, outcome_prefix, v = args[1], args[2], args[3], args[4], args[5]
  -- Only clients' submissions are answered (an empty outcome prefix for the others): a
  -- service's role needs no right on what it never writes.
  local answers = outcome_prefix ~= ''
  expect_stream_room(dead, true)
  -- The stream set aside from may itself be out of ids (repair_stream_ids mends it below).
  local rights = {{'XADD', dead}, {'XACK', inbox}, {'XDEL', inbox}, {'XSETID', inbox},
    {'XGROUP', 'SETID', inbox}, {'XREVRANGE', inbox}, {'XINFO', 'GROUPS', inbox}}
  if answers then
    expect_stream_room(events, true)
    for _, command in ipairs({{'XADD', events}, {'SET', outcome_prefix .. 'x'},
        {'PUBLISH', outcome_prefix .. 'x'}, {'EXISTS', outcome_prefix .. 'x'}}) do
      rights[#rights + 1] = command
    end
  end
  if replies then
    expect_append_room(replies)
    rights[#rights + 1] = {'XADD', replies}
  end
  expect_rights(rights)
  local now_n = now_ms()
  local now = tostring(now_n)
  local future = false
  local answered = {}
  local i = 6
  while i <= #args do
    local entry_id, reason, deliveries, reqid, kind, guard = args[i], args[i + 1], args[i + 2],
      args[i + 3], args[i + 4], args[i + 5]
    local digest = args[i + 6]
    local original_fields, nfields = args[i + 7], math.min(tonumber(args[i + 8]), MAX_DEAD_FIELDS)
    local first = i + 9
    i = first + 2 * tonumber(args[i + 8])
    if redis.call('XACK', inbox, group, entry_id) == 0 then
      answered[#answered + 1] = -1
    else
      local row = {'XADD', dead, 'MAXLEN', '~', maxlen, '*', 'stream', inbox, 'entry', entry_id,
        'reason', reason, 'deliveries', deliveries, 'time', now, 'request_id', reqid, 'kind', kind,
        'fields', original_fields}
      for j = 0, nfields - 1 do
        row[#row + 1] = 'f.' .. args[first + 2 * j]
        row[#row + 1] = args[first + 2 * j + 1]
      end
      redis.call(unpack(row))
      answered[#answered + 1] = 0
      if id_less(tostring(now_n + FUTURE_MS) .. '-0', entry_id) then
        redis.call('XDEL', inbox, entry_id)
        future = true
      end
      if answers and reqid ~= '' and SUBMITTED[kind] then
        local okey = outcome_prefix .. reqid
        if redis.call('EXISTS', okey) == 0 and (guard == '' or redis.call('EXISTS', guard) == 0) then
          local json = outcome_json(reqid, kind, 'rejected', '',
            {reason = reason, entry = entry_id, submission = digest ~= '' and digest or nil})
          redis.call('SET', okey, json, 'EX', retention)
          redis.call('PUBLISH', okey, json)
          redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'e', json)
          answered[#answered] = 1
        end
      elseif reqid ~= '' and kind == 'fetch' and replies then
        redis.call('XADD', replies, '*', 'e', '{"v":' .. v .. ',"type":"unfetched","id":'
          .. q(reqid) .. ',"reason":' .. q(string.match(reason, '^[^:]*')) .. '}')
        answered[#answered] = 2
      end
    end
  end
  if future then repair_stream_ids(inbox, false) end
  return answered
end

-- Take a batch for a consumer with its size bounded server-side: an entry over the bounds
-- (too many fields, too many bytes) comes back cut to at most 16 fields of 8 KiB, marked,
-- with its request id and kind when its `e` field (up to 2 MiB) names them, so that a
-- worker's memory is bounded by the batch's count times the bounds, whatever producers
-- wrote.
-- KEYS: inbox
-- ARGV: group, consumer, mode (new: XREADGROUP >, own: XREADGROUP 0, claim: XAUTOCLAIM),
--       count, max fields, max bytes, then for claim: min idle ms, start id
-- Returns {next start (claim, else ''), cuts, deliveries, entries...}: the entries as
-- XREADGROUP gives them ({id, {field, value...}}, fields false when deleted while pending),
-- those over the bounds cut; cuts: {position, field count, bytes, request id, kind, ...}
-- for each cut entry (position from 1); deliveries: {id, count, ...} (own and claim only;
-- a new entry has been delivered once). Whole entries pass through untouched: most
-- entries are, and building new rows for them was a large share of the call.
local CUT_FIELDS = 16

local function identify(fields)
  for j = 1, #fields, 2 do
    if fields[j] == 'e' then
      local rid, kind = named_by(fields[j + 1])
      if rid then return rid, kind end
    end
  end
  return '', ''
end

-- An entry over the bounds, cut to at most 16 fields of 8 KiB; the facts about it.
local function cut(entry, nfields, size)
  local fields, kept = entry[2], {}
  for j = 1, math.min(#fields, 2 * CUT_FIELDS) do kept[j] = string.sub(fields[j], 1, CUT_BYTES) end
  local rid, kind = identify(fields)
  return {entry[1], kept}, {nfields, size, rid, kind}
end

-- What one call takes at most, whatever the entries' sizes: it reads in chunks (4, then
-- 8 at most: a chunk grown on small entries must not land on many huge ones) and
-- stops after the chunk that passes this many bytes or fields, so one call handles a few
-- hostile entries at worst, never a whole batch of them.
local READ_BUDGET_BYTES, READ_BUDGET_FIELDS, MAX_CHUNK = 4 * 1024 * 1024, 16384, 8

local function read(keys, args)
  local inbox, group, consumer, mode = keys[1], args[1], args[2], args[3]
  local count, max_fields, max_bytes = tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  local entries, cuts, next_start, after = {}, {}, args[8] or '0-0', '0'
  local chunk, bytes, fields, rounds = 4, 0, 0, 0
  while #entries < count and bytes <= READ_BUDGET_BYTES and fields <= READ_BUDGET_FIELDS
      and rounds < 32 do
    rounds = rounds + 1
    local want = math.min(chunk, count - #entries)
    local got
    if mode == 'claim' then
      local claimed = redis.call('XAUTOCLAIM', inbox, group, consumer, args[7], next_start,
        'COUNT', want)
      next_start, got = claimed[1], claimed[2]
    else
      local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
        'STREAMS', inbox, mode == 'own' and after or '>')
      got = reply and reply[1][2] or {}
    end
    for _, entry in ipairs(got) do
      local values = entry[2]
      if values then
        -- An entry with too many fields is cut for that alone: its bytes are not summed
        -- (0), which would cost a pass over every value of a hostile entry.
        local size = 0
        if #values <= 2 * max_fields then
          for j = 1, #values do size = size + #values[j] end
        end
        bytes, fields = bytes + size, fields + #values
        if #values / 2 > max_fields or size > max_bytes then
          local facts
          entry, facts = cut(entry, #values / 2, size)
          cuts[#cuts + 1] = #entries + 1
          for _, fact in ipairs(facts) do cuts[#cuts + 1] = fact end
        end
      end
      entries[#entries + 1] = entry
    end
    -- XAUTOCLAIM may return fewer than asked and still have more to scan: its cursor
    -- says when it is done; XREADGROUP has nothing more when it returns fewer.
    if mode == 'claim' then
      if next_start == '0-0' then break end
    elseif #got < want then
      break
    else
      after = got[#got][1]
    end
    chunk = math.min(chunk * 2, MAX_CHUNK)
  end
  local deliveries = {}
  if mode ~= 'new' and #entries > 0 then
    local first, final = entries[1][1], entries[#entries][1]
    for _, p in ipairs(redis.call('XPENDING', inbox, group, first, final, 2 * #entries + 100,
        consumer)) do
      deliveries[#deliveries + 1] = p[1]
      deliveries[#deliveries + 1] = p[4]
    end
  end
  local result = {mode == 'claim' and next_start or '', cuts, deliveries}
  for i, entry in ipairs(entries) do result[3 + i] = entry end
  return result
end

-- Worker names. The lock's value describes the holder; whoever holds the exact value
-- holds the name.
-- KEYS: lock. ARGV: value, ttl ms, force (0/1). Returns {1} or {0, current holder}.
-- A retired consumer's lock holds the tombstone 'retired' (retire_consumer): the name is
-- free for a new worker, but not for the old one to take back (lock_renew).
local RETIRED = 'retired'

local function lock_acquire(keys, args)
  local current = redis.call('GET', keys[1])
  if args[3] == '1' or not current or current == RETIRED then
    redis.call('SET', keys[1], args[1], 'PX', args[2])
    return {1}
  end
  return {0, current}
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
  -- A producer may push a stream's ids to the end (an explicit id, then MAXLEN 0): the door
  -- refuses to append then, and only looks; the reader's housekeeping mends it here.
  if redis.call('TYPE', stream)['ok'] == 'stream' then repair_stream_ids(stream, false) end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  if #groups == 0 then return 0 end
  local floor = nil
  for _, g in ipairs(groups) do
    local info = {}
    for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
    -- After the largest possible id nothing can follow: keep that entry, trim the rest.
    local candidate = id_next(info['last-delivered-id']) or info['last-delivered-id']
    local pending = redis.call('XPENDING', stream, info['name'])
    if pending[2] and id_less(pending[2], candidate) then candidate = pending[2] end
    if floor == nil or id_less(candidate, floor) then floor = candidate end
  end
  return redis.call('XTRIM', stream, 'MINID', floor)
end

-- If the retired worker was only frozen past its lock's TTL, it finds this tombstone at
-- its next renewal and stops, instead of taking its name back.
local function tombstone(lock)
  redis.call('SET', lock, RETIRED, 'EX', 86400)
end

-- Remove a consumer that is gone (its name lock expired) and holds nothing. Checking and
-- deleting in one call closes the race in which the consumer gets entries in between:
-- XGROUP DELCONSUMER would discard them.
-- KEYS: stream, the consumer's worker lock. ARGV: group, consumer, minimum idle ms.
-- Returns 1 if removed, 0 if kept (alive, holding entries, recently active or unknown).
local function retire_consumer(keys, args)
  local holder = redis.call('GET', keys[2])
  if holder and holder ~= RETIRED then return 0 end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', keys[1], args[1])) do
    local info = {}
    for k = 1, #c, 2 do info[c[k]] = c[k + 1] end
    if info['name'] == args[2] then
      if info['pending'] == 0 and info['idle'] >= tonumber(args[3]) then
        expect_rights({{'XGROUP', 'DELCONSUMER', keys[1]}, {'SET', keys[2]}})
        redis.call('XGROUP', 'DELCONSUMER', keys[1], args[1], args[2])
        tombstone(keys[2])
        return 1
      end
      return 0
    end
  end
  return 0
end

-- The operator's scale-down: hand a removed worker's pending entries to a survivor, then
-- delete its consumer, in one call, so that no entry becomes pending on it between the
-- check and the delete. Nothing while the worker still holds its lock (it is draining).
-- Each entry keeps its idle time and delivery count (XCLAIM IDLE, RETRYCOUNT; JUSTID
-- counts no delivery), so the survivor sees it as overdue as before and the dead-letter
-- bound still counts every delivery.
-- KEYS: the service's inbox, the removed worker's lock.
-- ARGV: group, removed consumer, surviving consumer, at most this many entries per call.
-- Returns {code, moved, remaining}: 0 deleted (it held nothing any more), 1 the worker
-- still holds its lock (nothing touched), 2 `moved` moved and `remaining` still pending
-- on it (call again), 3 no such stream or group.
local function hand_over(keys, args)
  local stream, lock, group, consumer = keys[1], keys[2], args[1], args[2]
  expect_rights({{'GET', lock}, {'XPENDING', stream}, {'XCLAIM', stream},
    {'XGROUP', 'DELCONSUMER', stream}, {'SET', lock}})
  local holder = redis.call('GET', lock)
  if holder and holder ~= RETIRED then return {1, 0, -1} end
  local entries = redis.pcall('XPENDING', stream, group, '-', '+', tonumber(args[4]), consumer)
  if entries.err then return {3, 0, 0} end
  local moved = 0
  for _, entry in ipairs(entries) do  -- {id, consumer, idle ms, deliveries}
    moved = moved + #redis.call('XCLAIM', stream, group, args[3], 0, entry[1],
      'IDLE', entry[3], 'RETRYCOUNT', entry[4], 'JUSTID')
  end
  if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
    tombstone(lock)
    return {0, moved, 0}
  end
  for _, pair in ipairs(redis.call('XPENDING', stream, group)[4] or {}) do
    if pair[1] == consumer then return {2, moved, tonumber(pair[2])} end
  end
  return {2, moved, 0}
end

-- Replace a string only if it still holds what the caller read: the operator's claim of a
-- library, taken over from a holder that is gone, with no check-then-set race.
-- KEYS: the key. ARGV: the value read, the new value. Returns 1 replaced, 0 not.
local function compare_and_set(keys, args)
  expect_rights({{'GET', keys[1]}, {'SET', keys[1]}})
  if redis.call('GET', keys[1]) ~= args[1] then return 0 end
  redis.call('SET', keys[1], args[2])
  return 1
end

-- Put a dead letter's original fields back on the stream it came from and delete the
-- dead letter, both or neither: every right and the stream's room are checked first, so
-- a caller refused either command (or a full stream) changes nothing.
-- KEYS: dead-letter stream, the stream to append to. ARGV: dead letter id, fields...
-- Returns the new entry's id, or false when the dead letter is gone.
local function requeue(keys, args)
  local dead, stream = keys[1], keys[2]
  expect_rights({{'XRANGE', dead}, {'XDEL', dead}, {'XADD', stream}, {'TYPE', stream},
    {'XINFO', 'STREAM', stream}, {'XREVRANGE', stream}, {'XSETID', stream},
    {'XGROUP', 'SETID', stream}, {'XINFO', 'GROUPS', stream}})
  expect_stream_room(stream, false)
  if #redis.call('XRANGE', dead, args[1], args[1]) == 0 then return false end
  local entry = {'XADD', stream, '*'}
  for i = 2, #args do entry[#entry + 1] = args[i] end
  local id = redis.call(unpack(entry))
  redis.call('XDEL', dead, args[1])
  return id
end

redis.register_function('bs1_dead_letter', dead_letter)
redis.register_function('bs1_requeue', requeue)
redis.register_function('bs1_read', read)
redis.register_function('bs1_retire_consumer', retire_consumer)
redis.register_function('bs1_lock_acquire', lock_acquire)
redis.register_function('bs1_lock_renew', lock_renew)
redis.register_function('bs1_lock_release', lock_release)
redis.register_function('bs1_trim', trim)
redis.register_function('bs1_hand_over', hand_over)
redis.register_function('bs1_compare_and_set', compare_and_set)
