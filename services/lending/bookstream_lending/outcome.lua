--
-- Lending's outcomes (their JSON is outcome_json, in the core prelude), stored, appended
-- to the domain events and announced to whoever listens.

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

-- The books a request asked for, each once, sorted (its outcome's `books`, by which the
-- door tells a resubmission of its id with other books apart): every one of them was
-- reserved from storage, paged from the shelves or unavailable.
local function asked(held, paged, unavailable)
  local books = {}
  for _, b in ipairs(held) do books[#books + 1] = b end
  for _, b in ipairs(paged) do books[#books + 1] = b end
  for _, item in ipairs(unavailable) do books[#books + 1] = item[1] end
  return sorted(books)
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
