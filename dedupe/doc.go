// Package dedupe makes the successful effect of a warren handler happen
// once per message id, even when the broker delivers a message again.
//
// Each message id has a key in a Store, with three states:
//
//	absent     → processing  Claim, with an owner token and a lease
//	processing → done        MarkDone by the owner, with a ttl
//	processing → absent      Release by the owner, or the lease expires
//	done       → absent      the ttl expires
//
// A worker claims the key before it runs the handler. Claimed means run
// it; Done means the message is a duplicate and can be acked unhandled;
// InProgress means another worker holds a live claim, so the message
// should come back later. After the handler succeeds the worker marks the
// key done, which holds for the done TTL; after it fails the worker
// releases the key so that a retry can claim it. A worker that dies loses
// its claim when the lease expires. Long handlers call Extend before the
// lease runs out. The owner token names one delivery attempt, so that a
// worker whose lease expired cannot mark done or release another worker's
// claim.
//
// RedisStore keeps the states in Redis (single server, Sentinel or
// Cluster), one Lua script per transition; its batch calls (ClaimAll,
// MarkDoneAll) make one script call per hash slot on Cluster, per 128
// keys on one server, all in one pipeline, and take the common cases
// with plain commands: a fresh key's claim is a SET NX, and the done mark
// of a claim its caller knows it holds (Ref.Held) a SET XX GET. Concurrent
// calls share pipelines, except renewals (ExtendAll), which go alone.
// MemoryStore keeps them in process memory, for tests and single-process
// use. Key builds bounded keys that stay in one Cluster slot per message,
// and BodyKeyID gives an id to a message that has none. The dedupetest
// package is the conformance suite every Store passes (Run), and every
// BatchStore (RunBatch).
//
// The smallest real use:
//
//	opts, err := dedupe.ParseRedisURL("redis://127.0.0.1:6379/0")
//	if err != nil { ... }
//	client := redis.NewUniversalClient(opts)
//	store, err := dedupe.NewRedis(client, dedupe.RedisConfig{})
//	if err != nil { ... }
//	key := dedupe.Key("", "orders", msgID)
//	st, err := store.Claim(ctx, key, owner, 30*time.Second)
//	if err == nil && st == dedupe.Claimed {
//		if err := handle(msg); err != nil {
//			_ = store.Release(ctx, key, owner) // let a retry run
//		} else {
//			err = store.MarkDone(ctx, key, owner, 24*time.Hour)
//		}
//	}
package dedupe
