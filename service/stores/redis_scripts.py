"""The user store's Lua scripts (``service/stores/redis.py`` explains the guarantees they give).
Redis runs a script atomically, like MULTI/EXEC, and replicates and logs its effects (the
writes), not the script, so TIME here never reruns on a replica or an AOF replay."""

# KEYS: marker, then (hist, seen, ver) per user. ARGV: deadline ms (Redis clock), marker TTL
# ms, history cap, users, then per user: n, n payloads, m, m item ids.
# -> 1 applied; 0 marker taken (aborted); -1 past the deadline (nothing written).
APPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[1]) then return -1 end
if not redis.call('SET', KEYS[1], 'applied', 'NX', 'PX', ARGV[2]) then return 0 end
local cap, a = tonumber(ARGV[3]), 5
for u = 0, tonumber(ARGV[4]) - 1 do
  local hist, seen, ver = KEYS[2 + 3 * u], KEYS[3 + 3 * u], KEYS[4 + 3 * u]
  local n = tonumber(ARGV[a])
  redis.call('RPUSH', hist, unpack(ARGV, a + 1, a + n))
  redis.call('LTRIM', hist, -cap, -1)
  a = a + n + 1
  local m = tonumber(ARGV[a])
  redis.call('SADD', seen, unpack(ARGV, a + 1, a + m))
  a = a + m + 1
  redis.call('INCR', ver)
end
return 1
"""
# Claims the batch as aborted unless the batch claimed it first; -> "applied" | "aborted".
RESOLVE = """
redis.call('SET', KEYS[1], 'aborted', 'NX', 'PX', ARGV[1])
return redis.call('GET', KEYS[1])
"""
# Marks a seed run done only if all its batches are still there. KEYS: the run's batch count,
# the seed marker. ARGV: batches sent. -> 1 marked; 0 the count differs (Redis lost some).
SEAL = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], '1')
redis.call('DEL', KEYS[1])
return 1
"""
