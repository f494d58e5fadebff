"""The Lua scripts of the Redis quota store. Redis runs each one atomically: no other command of
any replica runs between its first and its last line, which is what makes admission exact.

Every key a script touches carries the project's hash tag (`{project}`), so in a Redis Cluster
they are all in one slot. The keys of expired reservations are built inside the admission script
(from the reservation index) instead of being passed in: they have the same tag, so the same slot.

Counters are integers; tokens travel as decimal strings (cjson would round large numbers).
"""

# Shared by the scripts: add `delta` to a counter the way the SQLite store does. A positive
# delta creates the counter (expiring at the end of its window plus the grace period); a
# negative one only lowers an existing counter, never below 0. Expiry times come from the
# gateway's clock (ARGV[1], ms) and are set relative to it, so an injected clock works too.
_APPLY = """
local now = tonumber(ARGV[1])

local function apply(key, delta, expires_at)
  if delta > 0 then
    if expires_at > now then  -- a window long gone has no counter left to add to
      redis.call('INCRBY', key, delta)
      redis.call('PEXPIRE', key, expires_at - now)
    end
  elseif delta < 0 and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end

local function give_back(data, requests, tokens_sign, tokens)
  -- data: the reservation as stored; adds `requests` to request counters and
  -- `tokens_sign * tokens` to token counters
  local held = cjson.decode(data)
  for _, c in ipairs(held.c) do
    if c[2] == 'requests' or c[2] == 'tool_calls' then
      apply(c[1], requests, tonumber(c[3]))
    else
      apply(c[1], tokens_sign * tokens, tonumber(c[3]))
    end
  end
end
"""

# Give back the reservations in index KEYS[1] whose expiry is before now (their replica died or
# never settled); ARGV[2] is the prefix of reservation keys. At most 200 per call.
_EXPIRE = """
local function expire(index, prefix)
  local expired = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. now, 'LIMIT', 0, 200)
  for _, id in ipairs(expired) do
    local rkey = prefix .. id
    local data = redis.call('GET', rkey)
    if data then
      give_back(data, -1, -1, tonumber(cjson.decode(data).t))
      redis.call('DEL', rkey)
    end
    redis.call('ZREM', index, id)
  end
  return #expired
end
"""

#: KEYS: 1 the index. ARGV: 1 now (ms), 2 the prefix of reservation keys. Returns how many
#: reservations it gave back.
EXPIRE = _APPLY + _EXPIRE + """
return expire(KEYS[1], ARGV[2])
"""

#: KEYS: 1 the project's reservation index (zset id -> expiry), 2 the new reservation, then one
#: counter per limit. ARGV: 1 now (ms), 2 the prefix of reservation keys, 3 token estimate,
#: 4 reservation id, 5 its expiry (ms), 6 when its record may go (ms), then per limit: unit,
#: limit, counter expiry (ms). Returns {1 admitted or 0 refused, used before, per limit...}.
ADMIT = _APPLY + _EXPIRE + """
expire(KEYS[1], ARGV[2])

local n = #KEYS - 2
local reply = {1}
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
  reply[i + 1] = used
  if used >= tonumber(ARGV[6 + (i - 1) * 3 + 2]) then
    reply[1] = 0
  end
end
if reply[1] == 0 then
  return reply
end

local tokens = tonumber(ARGV[3])
local counters = {}
for i = 1, n do
  local unit = ARGV[6 + (i - 1) * 3 + 1]
  local expires_at = tonumber(ARGV[6 + (i - 1) * 3 + 3])
  if unit == 'requests' or unit == 'tool_calls' then apply(KEYS[i + 2], 1, expires_at)
  else apply(KEYS[i + 2], tokens, expires_at) end
  counters[i] = {KEYS[i + 2], unit, ARGV[6 + (i - 1) * 3 + 3]}
end
local keep = tonumber(ARGV[6]) - now
redis.call('SET', KEYS[2], cjson.encode({t = ARGV[3], c = counters}), 'PX', keep)
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < keep then  -- also when it has none yet (-1)
  redis.call('PEXPIRE', KEYS[1], keep)
end
return reply
"""

#: KEYS: 1 the reservation index, 2 the reservation, 3 its "done" marker. ARGV: 1 now (ms),
#: 2 reservation id, 3 "settle" or "release", 4 tokens used (settle), 5 how long the marker
#: stays (ms), 6 the reservation as admitted (to count usage when it expired and was given back
#: meanwhile).
#: Returns 1 when it changed counters, 0 for a repeat (a retry whose first reply was lost).
FINISH = _APPLY + """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local data = redis.call('GET', KEYS[2])
local used = tonumber(ARGV[4])
if data then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
  local estimate = tonumber(cjson.decode(data).t)
  if ARGV[3] == 'release' then
    give_back(data, -1, -1, estimate)
  else
    give_back(data, 0, 1, used - estimate)
  end
elseif ARGV[3] == 'settle' then
  -- expired and given back meanwhile: count what was really used
  give_back(ARGV[6], 1, 1, used)
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
return 1
"""

#: KEYS: 1 the project's reservation index. ARGV: 1 the match pattern of its counters. Returns
#: {open reservations, key, value, key, value...}. SCAN runs on the node of the project's slot,
#: which holds every key of the project.
USAGE = """
local out = {redis.call('ZCARD', KEYS[1])}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    out[#out + 1] = key
    out[#out + 1] = redis.call('GET', key) or '0'
  end
until cursor == '0'
return out
"""
