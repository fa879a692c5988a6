package dedupe

import "github.com/redis/go-redis/v9"

// Stored values. A processing key holds valueProcessingPrefix followed by
// the owner token and expires after the lease; a done key holds valueDone
// and expires after the done TTL. The scripts below spell the same values.
const (
	valueProcessingPrefix = "p:"
	valueDone             = "d"
)

// Replies of the scripts.
const (
	replyForeign    = 0  // claim: the key holds a value this package did not write
	replyNotOwner   = 0  // extend, mark done, release: owner does not hold the claim
	replyOK         = 1  // claim: claimed; others: the transition happened
	replyDone       = 2  // claim: the key is done
	replyInProgress = 3  // claim: another owner holds the claim
	replyWrongType  = -1 // batched scripts: the key holds another type
)

// claimScript: KEYS[1] key, ARGV[1] owner, ARGV[2] lease in ms.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then
  return 2
end
if v == 'p:' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if string.sub(v, 1, 2) == 'p:' then
  return 3
end
return 0
`)

// extendScript: KEYS[1] key, ARGV[1] owner, ARGV[2] lease in ms.
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= 'p:' .. ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// markDoneScript: KEYS[1] key, ARGV[1] owner, ARGV[2] ttl in ms. A key
// that is done already stays as it is and counts as success: after a lost
// reply the client sends the script again, and it must not report the
// mark it just stored as a lost claim.
var markDoneScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == 'd' then
  return 1
end
if v ~= 'p:' .. ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
return 1
`)

// releaseScript: KEYS[1] key, ARGV[1] owner.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= 'p:' .. ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
`)

// The scripts below work on many keys in one call (see runGrouped): KEYS
// the keys, ARGV[1] a value shared by every key, ARGV[i+1] the owner of
// KEYS[i]. Each replies one integer per key, as its one-key script would,
// or replyWrongType for a key that holds another type than a string (so
// that one such key fails alone, not the whole call). One script call
// costs Redis far less than one per key, but Redis Cluster takes the keys
// of one call only if they share a hash slot: runGrouped groups them so.

// claimAllScript is claimScript for many keys; ARGV[1] is the lease in ms.
var claimAllScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local owned = 'p:' .. ARGV[i + 1]
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then
    out[i] = -1
  elseif not v then
    redis.call('SET', k, owned, 'PX', ARGV[1])
    out[i] = 1
  elseif v == 'd' then
    out[i] = 2
  elseif v == owned then
    redis.call('PEXPIRE', k, ARGV[1])
    out[i] = 1
  elseif string.sub(v, 1, 2) == 'p:' then
    out[i] = 3
  else
    out[i] = 0
  end
end
return out
`)

// markDoneAllScript is markDoneScript for many keys; ARGV[1] is the ttl
// in ms.
var markDoneAllScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then
    out[i] = -1
  elseif v == 'd' then
    out[i] = 1
  elseif v ~= 'p:' .. ARGV[i + 1] then
    out[i] = 0
  else
    redis.call('SET', k, 'd', 'PX', ARGV[1])
    out[i] = 1
  end
end
return out
`)

// extendAllScript is extendScript for many keys; ARGV[1] is the lease in
// ms.
var extendAllScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then
    out[i] = -1
  elseif v ~= 'p:' .. ARGV[i + 1] then
    out[i] = 0
  else
    redis.call('PEXPIRE', k, ARGV[1])
    out[i] = 1
  end
end
return out
`)
