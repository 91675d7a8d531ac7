--
-- Lending's outcomes: the JSON of bookstream_core.events.Outcome (its field order and
-- names; tests/lending/test_contract.py decodes every path strictly), stored, appended
-- to the domain events and announced to whoever listens.

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
    .. ',"entry":null}'
end

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

-- An earlier event with this id was set aside as `rejected`: nothing of it was applied,
-- so a valid event with the same id (a retried dead letter, a corrected resubmission)
-- is applied and its outcome replaces the rejection.
local function answered(ctx, reqid)
  local json = redis.call('GET', outcome_key(ctx, reqid))
  return json and not string.find(json, '"status":"rejected"', 1, true)
end
