-- The bucket script of keyrack.ratelimit.redis: take a grant, give finished ones back.
--
-- KEYS[1] token hash (tokens in millionths, stamp in µs), KEYS[2] slot zset (one member
-- '<grant>:<n>' per in-flight slot held, scored by its expiry in µs).
-- ARGV: rate, concurrency, lease µs, grant id, now µs ('' = Redis TIME), n wanted
--       (0: only give back), then optionally the finished grants to give back, one
--       argument: space-separated "<grant>*<slots>*<unused tokens>".
-- Returns {decision, remaining whole tokens, reset µs, n granted}; decision 0 =
-- granted (or given back only), 1 = concurrency-limited, 2 = rate-limited.

local MICRO = 1000000  -- µs per second and millionth-tokens per token (ratelimit.base.MICRO)
local TTL_SLACK_MS = 1000  -- kept beyond the exact idle horizon (ratelimit.wire.TTL_SLACK_MS)

local rate = tonumber(ARGV[1])
local concurrency = tonumber(ARGV[2])
local lease_us = tonumber(ARGV[3])
local now = tonumber(ARGV[5])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * MICRO + tonumber(time[2])
end
local capacity = rate * MICRO
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens, stamp = capacity, now
end
-- clamped: a bucket is full one second after its last grant anyway
tokens = math.min(capacity, tokens + math.min(math.max(now - stamp, 0), MICRO) * rate)
stamp = math.max(stamp, now)
local changed = false

if ARGV[7] then
  for grant, slots, unused in string.gmatch(ARGV[7], '([^%s*]+)%*(%d+)%*(%d+)') do
    local removed = 0
    local batch = {}
    for n = 1, tonumber(slots) do
      batch[#batch + 1] = grant .. ':' .. n
      if #batch == 1000 then  -- unpack() has a stack limit
        removed = removed + redis.call('ZREM', KEYS[2], unpack(batch))
        batch = {}
      end
    end
    if #batch > 0 then
      removed = removed + redis.call('ZREM', KEYS[2], unpack(batch))
    end
    -- only once: a grant given back twice (or expired) has no slots left to remove
    if removed > 0 and tonumber(unused) > 0 then
      tokens = math.min(capacity, tokens + tonumber(unused) * MICRO)
      changed = true
    end
  end
end

local function save()
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', stamp)
  redis.call('PEXPIRE', KEYS[1], 1000 + TTL_SLACK_MS)
end

local wanted = tonumber(ARGV[6])
local refusal = nil
if wanted > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local held = redis.call('ZCARD', KEYS[2])
  if held >= concurrency then
    refusal = {1, math.floor(tokens / MICRO), 0, 0}
  elseif tokens < MICRO then
    refusal = {2, 0, math.ceil((MICRO - tokens) / rate), 0}
  else
    wanted = math.min(wanted, math.floor(tokens / MICRO), concurrency - held)
  end
end
if wanted == 0 or refusal then
  if changed then
    save()
  end
  return refusal or {0, math.floor(tokens / MICRO), 0, 0}
end

tokens = tokens - wanted * MICRO
save()
local expiry = now + lease_us
local batch = {}
for n = 1, wanted do
  batch[#batch + 1] = expiry
  batch[#batch + 1] = ARGV[4] .. ':' .. n
  if #batch == 1000 then
    redis.call('ZADD', KEYS[2], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  redis.call('ZADD', KEYS[2], unpack(batch))
end
redis.call('PEXPIRE', KEYS[2], math.ceil(lease_us / 1000) + TTL_SLACK_MS)
return {0, math.floor(tokens / MICRO), math.ceil((capacity - tokens) / rate), wanted}
