-- Hand a removed worker's pending entries to a surviving worker, then delete the
-- removed worker's consumer -- all in one atomic step, so no entry can become pending
-- on the removed consumer between the check and the delete.
--
-- KEYS[1]  the service's inbox stream
-- KEYS[2]  the removed worker's lock key (it exists while that worker runs; 'retired'
--          once a retirement left its tombstone there)
-- ARGV[1]  consumer group
-- ARGV[2]  removed consumer
-- ARGV[3]  surviving consumer that takes the entries over
-- ARGV[4]  at most this many entries are moved per call (keeps each call short)
-- returns  {code, moved, remaining}
--   code 0: the consumer held nothing (any more) and was deleted
--   code 1: the worker still holds its lock (still running or draining): nothing touched
--   code 2: `moved` entries moved, `remaining` still pending on it: call again
--   code 3: the stream or the group does not exist: nothing to do
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= 'retired' then
  return {1, 0, -1}
end
local ok, entries = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if not ok then
  return {3, 0, 0}
end
local moved = 0
for _, entry in ipairs(entries) do
  -- entry = {id, consumer, idle ms, deliveries}. Keep the idle time and the delivery
  -- count as they were, so the survivor's own XAUTOCLAIM sees the entry exactly as
  -- overdue as before and the dead-letter bound still counts every delivery. JUSTID
  -- claims without counting a new delivery.
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, entry[1],
    'IDLE', entry[3], 'RETRYCOUNT', entry[4], 'JUSTID')
  moved = moved + #claimed
end
local left = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #left == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  -- A tombstone in the name's lock: the worker, if it was only frozen past its lock's
  -- TTL, finds it when it next renews and stops instead of taking the name back.
  redis.call('SET', KEYS[2], 'retired', 'EX', 86400)
  return {0, moved, 0}
end
local remaining = 0
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
for _, pair in ipairs(summary[4] or {}) do
  if pair[1] == ARGV[2] then
    remaining = tonumber(pair[2])
  end
end
return {2, moved, remaining}
