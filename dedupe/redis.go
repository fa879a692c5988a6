package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultOpTimeout bounds one RedisStore call when RedisConfig.OpTimeout is 0.
const DefaultOpTimeout = 2 * time.Second

// RedisConfig configures a RedisStore.
type RedisConfig struct {
	// OpTimeout bounds each call (one script round trip), on top of the
	// caller's context. Default DefaultOpTimeout (2s); 0 means the default;
	// negative is rejected. The bound covers socket reads only if the client
	// has ContextTimeoutEnabled set, as clients built from ParseRedisURL do.
	OpTimeout time.Duration
	// NoPipelining sends every call on its own. false (the default) lets
	// concurrent calls share pipelines: one round trip for many claims
	// and done marks under load.
	NoPipelining bool
}

// RedisStore is a Store kept in Redis. Each transition is one Lua script
// on one key, so it works on a single server, with Sentinel and on Cluster.
// It is safe for concurrent use.
type RedisStore struct {
	client    redis.UniversalClient
	opTimeout time.Duration
	batch     *batcher
	// crossSlot is set once a single endpoint refused a script call on
	// keys of several hash slots (CROSSSLOT: a proxy in front of a sharded
	// Redis), so that batched calls group keys by slot from then on.
	crossSlot atomic.Bool
}

var _ Store = (*RedisStore)(nil)

// NewRedis returns a store that uses client. It does no I/O; call Ping to
// check the server. The store does not close client.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) (*RedisStore, error) {
	if client == nil {
		return nil, errors.New("dedupe: new redis store: nil client")
	}
	if cfg.OpTimeout < 0 {
		return nil, fmt.Errorf("dedupe: new redis store: op timeout must not be negative, got %s", cfg.OpTimeout)
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	s := &RedisStore{client: client, opTimeout: cfg.OpTimeout}
	if !cfg.NoPipelining {
		s.batch = &batcher{client: client, opTimeout: cfg.OpTimeout}
	}
	return s, nil
}

// Claim implements Store.
func (s *RedisStore) Claim(ctx context.Context, key, owner string, lease time.Duration) (Status, error) {
	if err := checkArgsDuration(opClaim, key, owner, "lease", lease); err != nil {
		return 0, err
	}
	n, err := s.run(ctx, claimScript, opClaim, key, owner, millis(lease))
	if err != nil {
		return 0, err
	}
	return claimStatus(key, n)
}

// claimStatus maps the claim script's reply.
func claimStatus(key string, n int64) (Status, error) {
	switch n {
	case replyOK:
		return Claimed, nil
	case replyDone:
		return Done, nil
	case replyInProgress:
		return InProgress, nil
	case replyForeign:
		return 0, opError(opClaim, key, ErrForeignValue)
	default:
		return 0, opError(opClaim, key, fmt.Errorf("unexpected script reply %d", n))
	}
}

// Extend implements Store.
func (s *RedisStore) Extend(ctx context.Context, key, owner string, lease time.Duration) error {
	if err := checkArgsDuration(opExtend, key, owner, "lease", lease); err != nil {
		return err
	}
	return s.runOwned(ctx, extendScript, opExtend, key, owner, millis(lease))
}

// MarkDone implements Store.
func (s *RedisStore) MarkDone(ctx context.Context, key, owner string, ttl time.Duration) error {
	if err := checkArgsDuration(opMarkDone, key, owner, "ttl", ttl); err != nil {
		return err
	}
	return s.runOwned(ctx, markDoneScript, opMarkDone, key, owner, millis(ttl))
}

// Release implements Store.
func (s *RedisStore) Release(ctx context.Context, key, owner string) error {
	if err := checkArgs(opRelease, key, owner); err != nil {
		return err
	}
	return s.runOwned(ctx, releaseScript, opRelease, key, owner)
}

// Ping implements Store.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.Ping(ctx).Err(); err != nil {
		s.noteError(ctx, err)
		return fmt.Errorf("dedupe: ping: %w", err)
	}
	return nil
}

// runOwned runs a script that replies replyOK or replyNotOwner.
func (s *RedisStore) runOwned(ctx context.Context, script *redis.Script, op, key string, args ...any) error {
	n, err := s.run(ctx, script, op, key, args...)
	if err != nil {
		return err // already says what was being done
	}
	return s.owned(op, key, n, nil)
}

// owned maps the reply of a script that checks the owner.
func (s *RedisStore) owned(op, key string, n int64, err error) error {
	if err != nil {
		return opError(op, key, err)
	}
	switch n {
	case replyOK:
		return nil
	case replyNotOwner:
		return ErrNotOwner
	default:
		return opError(op, key, fmt.Errorf("unexpected script reply %d", n))
	}
}

// run runs script on key with the op timeout and returns its integer reply.
func (s *RedisStore) run(ctx context.Context, script *redis.Script, op, key string, args ...any) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	var (
		n   int64
		err error
	)
	if s.batch != nil {
		n, err = s.batch.run(ctx, script, key, args...)
	} else {
		n, err = script.Run(ctx, s.client, []string{key}, args...).Int64()
	}
	if err != nil {
		s.noteError(ctx, err)
		return 0, opError(op, key, err)
	}
	return n, nil
}

var _ BatchStore = (*RedisStore)(nil)

// ClaimAll implements BatchStore. Claims of fresh keys, the common case,
// are plain SET NX commands in one pipeline, cheaper for Redis than a
// script (on Cluster go-redis sends each node its part at once); keys
// that were not free get the full claim, claimAllScript grouped by slot,
// which tells done, in progress and own claims apart.
func (s *RedisStore) ClaimAll(ctx context.Context, reqs []Ref, lease time.Duration) []ClaimResult {
	res := make([]ClaimResult, len(reqs))
	var good []int
	for i, r := range reqs {
		if err := checkArgsDuration(opClaim, r.Key, r.Owner, "lease", lease); err != nil {
			res[i].Err = err
			continue
		}
		good = append(good, i)
	}
	if len(good) == 0 {
		return res
	}
	if err := ctx.Err(); err != nil {
		for _, i := range good {
			res[i].Err = err
		}
		return res
	}
	taken, errs := s.setNX(ctx, reqs, good, lease)
	var rest []int
	for k, i := range good {
		switch {
		case errs[k] != nil:
			res[i].Err = opError(opClaim, reqs[i].Key, errs[k])
		case taken[k]:
			res[i].Status = Claimed
		default:
			rest = append(rest, i)
		}
	}
	if len(rest) == 0 {
		return res
	}
	s.eachGrouped(ctx, s.exec, claimAllScript, reqs, rest, millis(lease), func(i int, n int64, err error) {
		key := reqs[i].Key
		switch {
		case err != nil:
			res[i].Err = opError(opClaim, key, err)
		case n == replyWrongType:
			res[i].Err = opError(opClaim, key, ErrForeignValue)
		default:
			res[i].Status, res[i].Err = claimStatus(key, n)
		}
	})
	return res
}

// setNX claims the requests at idx with SET NX PX in one pipeline and
// reports which were free, or each one's error: on Cluster a node that
// is down fails its own keys only.
func (s *RedisStore) setNX(ctx context.Context, reqs []Ref, idx []int, lease time.Duration) ([]bool, []error) {
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	cmds := make([]*redis.BoolCmd, len(idx))
	taken := make([]bool, len(idx))
	errs := make([]error, len(idx))
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		for k, i := range idx {
			cmds[k] = pipe.SetNX(ctx, reqs[i].Key, valueProcessingPrefix+reqs[i].Owner, max(lease, time.Millisecond))
		}
	})
	if err != nil {
		for k := range errs {
			errs[k] = err
		}
		s.noteError(ctx, err)
		return taken, errs
	}
	for k, c := range cmds {
		taken[k], errs[k] = c.Result()
		if errors.Is(errs[k], redis.Nil) {
			taken[k], errs[k] = false, nil
		}
		s.noteError(ctx, errs[k])
	}
	return taken, errs
}

// MarkDoneAll implements BatchStore: a SET XX GET for each request that
// is Held, in one pipeline (see setDone), then markDoneAllScript for the
// others: one call per maxBatch keys on a single server (or Sentinel), one
// call per hash slot on Cluster, all in one pipeline.
func (s *RedisStore) MarkDoneAll(ctx context.Context, reqs []Ref, ttl time.Duration) []error {
	errs := make([]error, len(reqs))
	var good, held []int
	for i, r := range reqs {
		if errs[i] = checkArgsDuration(opMarkDone, r.Key, r.Owner, "ttl", ttl); errs[i] == nil {
			if r.Held {
				held = append(held, i)
			} else {
				good = append(good, i)
			}
		}
	}
	s.setDone(ctx, reqs, held, ttl, errs)
	s.eachGrouped(ctx, s.exec, markDoneAllScript, reqs, good, millis(ttl), func(i int, n int64, err error) {
		key := reqs[i].Key
		switch {
		case err != nil:
			errs[i] = opError(opMarkDone, key, err)
		case n == replyWrongType:
			errs[i] = opError(opMarkDone, key, ErrForeignValue)
		default:
			errs[i] = s.owned(opMarkDone, key, n, nil)
		}
	})
	return errs
}

// setDone stores the done marks of the requests at idx in one pipeline
// with SET XX GET, writing each one's error to errs: a key that is gone
// (lost with the store) is not written and answers ErrNotOwner, as the
// script would; a key that holds anything else becomes done, and the
// value it held says what to answer (see heldMarkError).
func (s *RedisStore) setDone(ctx context.Context, reqs []Ref, idx []int, ttl time.Duration, errs []error) {
	if len(idx) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	cmds := make([]*redis.StatusCmd, len(idx))
	err := s.exec(ctx, func(pipe redis.Pipeliner) {
		for k, i := range idx {
			cmds[k] = pipe.SetArgs(ctx, reqs[i].Key, valueDone, redis.SetArgs{Mode: "XX", Get: true, TTL: ttl})
		}
	})
	if err != nil {
		s.noteError(ctx, err)
	}
	for k, i := range idx {
		e := err
		if e == nil {
			old, cerr := cmds[k].Result()
			if cerr == nil || errors.Is(cerr, redis.Nil) || serverError(cerr, "WRONGTYPE") {
				errs[i] = heldMarkError(reqs[i], old, cerr)
				continue
			}
			e = cerr
			s.noteError(ctx, e)
		}
		errs[i] = opError(opMarkDone, reqs[i].Key, e)
	}
}

// heldMarkError is the answer to a held done mark of r that replaced old
// (cerr nil), found no key (redis.Nil) or found another type (WRONGTYPE).
func heldMarkError(r Ref, old string, cerr error) error {
	switch {
	case errors.Is(cerr, redis.Nil):
		return ErrNotOwner
	case cerr != nil:
		return opError(opMarkDone, r.Key, ErrForeignValue)
	case old == valueProcessingPrefix+r.Owner || old == valueDone:
		return nil
	case strings.HasPrefix(old, valueProcessingPrefix):
		return opError(opMarkDone, r.Key, ErrMarkedOver)
	default:
		return opError(opMarkDone, r.Key, fmt.Errorf("%w; it is overwritten with the done mark", ErrForeignValue))
	}
}

// ExtendAll implements BatchStore: one script call per group of keys (per
// hash slot on Cluster), all in one pipeline.
func (s *RedisStore) ExtendAll(ctx context.Context, reqs []Ref, lease time.Duration) []error {
	errs := make([]error, len(reqs))
	var good []int
	for i, r := range reqs {
		if errs[i] = checkArgsDuration(opExtend, r.Key, r.Owner, "lease", lease); errs[i] == nil {
			good = append(good, i)
		}
	}
	// Renewals keep leases alive: they do not wait behind the round trips
	// of other calls, one slow one of which could make them miss a lease.
	s.eachGrouped(ctx, s.execAlone, extendAllScript, reqs, good, millis(lease), func(i int, n int64, err error) {
		key := reqs[i].Key
		switch {
		case err != nil:
			errs[i] = opError(opExtend, key, err)
		case n == replyWrongType:
			errs[i] = opError(opExtend, key, ErrNotOwner)
		default:
			errs[i] = s.owned(opExtend, key, n, nil)
		}
	})
	return errs
}

// eachGrouped runs script (a many-keys script) for the requests of reqs
// at idx through runGrouped, and calls answer with each one's position in
// reqs and its reply or error.
func (s *RedisStore) eachGrouped(ctx context.Context, exec execFunc, script *redis.Script, reqs []Ref, idx []int, shared any, answer func(i int, n int64, err error)) {
	if len(idx) == 0 {
		return
	}
	keys := make([]string, len(idx))
	owners := make([]string, len(idx))
	for k, i := range idx {
		keys[k], owners[k] = reqs[i].Key, reqs[i].Owner
	}
	replies, errs := s.runGrouped(ctx, exec, script, keys, shared, owners)
	for k, i := range idx {
		answer(i, replies[k], errs[k])
	}
}

// execFunc runs the commands queue adds in one pipeline: RedisStore.exec
// or execAlone.
type execFunc func(ctx context.Context, queue func(redis.Pipeliner)) error

// exec runs the commands queue adds in one pipeline: one shared with
// other calls, or one of its own with pipelining off. With an error (ctx
// ended first) the commands may still run but must not be read.
func (s *RedisStore) exec(ctx context.Context, queue func(redis.Pipeliner)) error {
	if s.batch != nil {
		return s.batch.pipe(ctx, queue)
	}
	return s.execAlone(ctx, queue)
}

// execAlone runs the commands queue adds in a pipeline of their own.
func (s *RedisStore) execAlone(ctx context.Context, queue func(redis.Pipeliner)) error {
	pipe := s.client.Pipeline()
	queue(pipe)
	_, _ = pipe.Exec(ctx)
	return nil
}

// noteError reacts to a failed call. On Cluster, a node that cannot be
// reached (killed, partitioned) or a cluster that says it is down or busy
// moving slots makes the client load the slot map again: go-redis does so
// by itself after MOVED, ASK and READONLY replies, but not after a
// connection failure, so that without this the slots of a killed master
// would keep going to it until the periodic reload (a minute) even though
// a replica took over within seconds. Loads are shared and spaced by
// go-redis.
func (s *RedisStore) noteError(ctx context.Context, err error) {
	cc, ok := s.client.(*redis.ClusterClient)
	if !ok || !Unavailable(err) || errors.Is(err, context.Canceled) {
		return
	}
	cc.ReloadState(ctx)
}
