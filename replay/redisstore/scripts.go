package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches only the keys it is given (all under one hash
// tag, so one Redis Cluster slot) and runs atomically. Sequences travel as
// decimal strings and are handled as Lua numbers (doubles), which is exact up
// to maxSeq (2^53-1); Go refuses anything above before calling. Stream ids
// are "<seq>-0", formatted with %d (Lua's tostring would switch to exponent
// form above 1e14).
//
// Replies are arrays whose first element is a status code (the code*
// constants), never error replies, so a refusal is not mistaken for a broken
// connection.
const (
	codeOK         = 0
	codeOutOfOrder = 1 // append: seq is not newest+1
	codeFenced     = 2 // another token is current (or the lease is held)
	codeUnknown    = 3 // the meta hash is gone: unknown generation
	codeExists     = 4 // create: the generation already exists
)

// appendScript appends frames at consecutive sequences, trims, and updates
// meta, after checking the fencing token and the sequence.
//
// KEYS[1] meta, KEYS[2] log.
// ARGV[1] token, ARGV[2] capacity, ARGV[3] first seq, ARGV[4] "1" to set the
// upstream id, ARGV[5] upstream id, ARGV[6..] frames.
// Reply: {0, oldest, newest, bytes} | {1, newest} | {2, current token} | {3}.
//
// A call whose frames are exactly the newest ones already stored (a retry
// whose first attempt was applied but whose reply was lost) succeeds without
// appending again, so retrying an Append after a timeout is safe.
//
// Bytes count the frames inside the logical window [oldest, newest] that
// Bounds reports; MAXLEN ~ may leave a few older entries in Redis (a part of
// one stream node), which are never served.
var appendScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'token', 'oldest', 'newest', 'bytes')
if not m[1] then return {3} end
if m[1] ~= ARGV[1] then return {2, m[1]} end
local function id(s) return string.format('%d-0', s) end
local cap = tonumber(ARGV[2])
local seq = tonumber(ARGV[3])
local n = #ARGV - 5
local last = seq + n - 1
local oldest = tonumber(m[2])
local newest = tonumber(m[3])
local bytes = tonumber(m[4])
if newest > 0 and seq ~= newest + 1 then
  if last == newest and seq >= oldest then
    local es = redis.call('XRANGE', KEYS[2], id(seq), id(last))
    if #es == n then
      local same = true
      for i = 1, n do
        if es[i][2][2] ~= ARGV[5 + i] then same = false; break end
      end
      if same then return {0, oldest, newest, bytes} end
    end
  end
  return {1, newest}
end
if newest == 0 then oldest = seq end
local from = math.max(oldest, last - cap + 1)
if newest > 0 and from > oldest then
  local es = redis.call('XRANGE', KEYS[2], id(oldest), id(math.min(from - 1, newest)))
  for i = 1, #es do bytes = bytes - string.len(es[i][2][2]) end
  if bytes < 0 then bytes = 0 end
end
for i = 1, n do
  local s = seq + i - 1
  if s >= from then
    local f = ARGV[5 + i]
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id(s), 'f', f)
    bytes = bytes + string.len(f)
  end
end
local h = {'oldest', string.format('%d', from), 'newest', string.format('%d', last), 'bytes', string.format('%d', bytes)}
if ARGV[4] == '1' then h[7] = 'upstream'; h[8] = ARGV[5] end
redis.call('HSET', KEYS[1], unpack(h))
if newest == 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return {0, from, last, bytes}
`)

// acquireScript takes the lease (SET NX PX) with a new fencing token
// (HINCRBY of the meta hash's token counter), creating the generation first
// in create mode.
//
// KEYS[1] meta, KEYS[2] lease, KEYS[3] log.
// ARGV[1] "create" or "take", ARGV[2] lease ms, ARGV[3] instance, ARGV[4]
// node id, ARGV[5] generation text, ARGV[6] ms to keep the keys ("0": no
// expiry).
// Reply: {0, token} | {2, holder token, holder node} | {3} | {4}.
//
// A lease that already carries this Store's instance id is returned as it is
// (renewed), so a retried call whose first attempt took it succeeds.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if cur then
  local tok, inst, node = string.match(cur, '^(%d+) (%S+) (.*)$')
  if inst == ARGV[3] then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return {0, tok}
  end
  return {2, tok or '', node or cur}
end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'create' then
  if exists then return {4} end
  redis.call('HSET', KEYS[1], 'gen', ARGV[5], 'oldest', '1', 'newest', '0', 'bytes', '0', 'upstream', '')
elseif not exists then
  return {3}
end
local tok = string.format('%d', redis.call('HINCRBY', KEYS[1], 'token', 1))
redis.call('SET', KEYS[2], tok .. ' ' .. ARGV[3] .. ' ' .. ARGV[4], 'NX', 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[4])
if ARGV[6] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return {0, tok}
`)

// renewScript extends the lease of the current token. A lease that expired
// with no one taking it since (the meta token is still ours) is taken again
// under the same token.
//
// KEYS[1] meta, KEYS[2] lease, KEYS[3] log.
// ARGV[1] token, ARGV[2] lease ms, ARGV[3] instance, ARGV[4] node id, ARGV[5]
// ms to keep the keys ("0": no expiry).
// Reply: {0} | {2, holder token, holder node} | {3}.
var renewScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if cur then
  local tok, inst, node = string.match(cur, '^(%d+) (%S+) (.*)$')
  if tok ~= ARGV[1] then return {2, tok or '', node or cur} end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
else
  local mt = redis.call('HGET', KEYS[1], 'token')
  if not mt then return {3} end
  if mt ~= ARGV[1] then return {2, mt, ''} end
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4], 'PX', ARGV[2])
end
if ARGV[5] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
return {0}
`)

// releaseScript drops the lease if it is still this token's and starts the
// retention clock of the generation's keys.
//
// KEYS[1] meta, KEYS[2] lease, KEYS[3] log.
// ARGV[1] token, ARGV[2] retention ms ("0": no expiry).
// Reply: {0}.
var releaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if cur and string.match(cur, '^(%d+) ') == ARGV[1] then redis.call('DEL', KEYS[2]) end
if ARGV[2] ~= '0' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return {0}
`)

// upstreamScript records the upstream's last event id, fenced.
//
// KEYS[1] meta. ARGV[1] token, ARGV[2] upstream id.
// Reply: {0} | {2, current token} | {3}.
var upstreamScript = redis.NewScript(`
local t = redis.call('HGET', KEYS[1], 'token')
if not t then return {3} end
if t ~= ARGV[1] then return {2, t} end
redis.call('HSET', KEYS[1], 'upstream', ARGV[2])
return {0}
`)
