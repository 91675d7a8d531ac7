--
-- What a Lending call sets aside itself: an entry its handler failed on (a bug:
-- script_error), of an unknown kind or on the wrong stream (the worker refuses those
-- first). Part of bookstream_lending_v1 (loaded with lending.lua, after context.lua).
-- The dead letter has the core's format (core.lua's bs1_dead_letter), so that
-- `bookstream dead-letters` lists, shows and retries it like any other.

-- The kinds clients submit (bookstream_core.events.SUBMISSIONS, written in when read).
local SUBMITTED = @SUBMISSION_KINDS@

-- What an error raised in a call says (an error table's text, its BS... code dropped).
local function failure_text(err)
  local why = type(err) == 'table' and err.err or tostring(err)
  return (string.gsub(why, '^BS%u+ ', ''))
end

-- The entry's `e` field as its stream holds it (nil if there is none).
local function entry_payload(ctx, entry_id)
  local found = redis.call('XRANGE', ctx.stream, entry_id, entry_id)[1]
  local fields = found and found[2] or {}
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'e' then return fields[j + 1] end
  end
  return nil
end

-- A client's submission is answered `rejected`, as the core's dead_letter answers what
-- the worker refused, unless it was answered already or waits for Shelving: its client
-- would otherwise wait for ever. The rejection names the submission by the digest of its
-- bytes (events.submission_digest), so that its client knows it for its own.
local function reject(ctx, entry_id, reqid, kind, reason, payload)
  if answered(ctx, reqid) or redis.call('EXISTS', req_key(ctx, reqid)) == 1 then return false end
  local digest = payload and string.sub(redis.sha1hex(payload), 1, 32) or nil
  publish_outcome(ctx, reqid, outcome_json(reqid, kind, 'rejected', '',
    {reason = string.sub(reason, 1, 200), entry = entry_id, submission = digest}))
  return true
end

-- Dead-letter the entry (already acknowledged) with its own fields; answer its client.
-- Returns the row's status: `rejected` if its client was answered, else `orphan`.
local function set_aside(ctx, entry_id, kind, reqid, reason)
  local payload = entry_payload(ctx, entry_id)
  local row = {'XADD', ctx.p .. 'lending:dead', 'MAXLEN', '~', ctx.events_maxlen, '*',
    'stream', ctx.stream, 'entry', entry_id, 'reason', reason, 'deliveries', '1',
    'time', tostring(ctx.now), 'request_id', reqid, 'kind', kind,
    'fields', payload and '1' or '0'}
  if payload then
    row[#row + 1] = 'f.e'
    row[#row + 1] = payload
  end
  redis.call(unpack(row))
  -- Its own keys were checked (the handler's preparation), so answering cannot fail on
  -- them; whatever else fails, it must not fail the call after its writes.
  if ctx.kinds[kind] and SUBMITTED[kind] and reqid ~= '' then
    local ok, answered_now = pcall(reject, ctx, entry_id, reqid, kind, reason, payload)
    if ok and answered_now then return 'rejected' end
  end
  return 'orphan'
end
