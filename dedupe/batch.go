package dedupe

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many script calls share one pipeline, and how many
// keys one batched script call (runGrouped) takes.
const maxBatch = 128

// batcher sends concurrent calls to Redis in shared pipelines: calls that
// arrive while a pipeline is on the wire go together in the next one. A
// call is one single-key script call (Claim, MarkDone, ...) or the
// commands of a batch call (ClaimAll's SET NXs, MarkDoneAll's scripts),
// so that a route's claims and done marks share round trips: each round
// trip costs Redis and the worker a read, a write and a wake-up, about as
// much as the commands in it. There is no goroutine of its own: a caller
// whose call opens a batch sends it (the leader), and hands the lead to
// the first call that queued meanwhile. Under load many claims and done marks share one round
// trip; alone, a call costs one round trip as before.
type batcher struct {
	client    redis.UniversalClient
	opTimeout time.Duration

	mu      sync.Mutex
	queue   []*call
	running bool
}

type call struct {
	script *redis.Script
	key    string
	args   []any
	n      int64
	err    error
	// queue, when set, adds the call's commands to the pipeline instead;
	// the caller reads their results once done is closed.
	queue func(redis.Pipeliner)
	done  chan struct{}
	lead  chan struct{} // closed when this call must send the next batch
}

// run sends script on key and returns its integer reply.
func (b *batcher) run(ctx context.Context, script *redis.Script, key string, args ...any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c := &call{script: script, key: key, args: args, done: make(chan struct{}), lead: make(chan struct{})}
	return b.wait(ctx, c)
}

// pipe has queue add its commands to a shared pipeline and returns once
// they ran, or with ctx's error: then the commands may still run, and
// the caller must not read them.
func (b *batcher) pipe(ctx context.Context, queue func(redis.Pipeliner)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &call{queue: queue, done: make(chan struct{}), lead: make(chan struct{})}
	_, err := b.wait(ctx, c)
	return err
}

// wait queues c, sends its batch if it leads, and waits for its result.
func (b *batcher) wait(ctx context.Context, c *call) (int64, error) {
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.running {
		b.mu.Unlock()
		select {
		case <-c.done:
			return c.n, c.err
		case <-c.lead:
		case <-ctx.Done():
			// The call may still be sent by the current leader; its
			// result is then dropped. Claims expire with their lease.
			b.abandon(c)
			return 0, ctx.Err()
		}
	} else {
		b.running = true
		b.mu.Unlock()
	}
	b.lead()
	<-c.done
	return c.n, c.err
}

// abandon gives up c. A call still queued is removed; one already in a
// batch finishes there, its result dropped; one handed the lead sends the
// batch it leads, so that the others are not stranded.
func (b *batcher) abandon(c *call) {
	b.mu.Lock()
	select {
	case <-c.lead:
		b.mu.Unlock()
		b.lead()
		return
	default:
	}
	for i, q := range b.queue {
		if q == c {
			b.queue = append(b.queue[:i:i], b.queue[i+1:]...)
			break
		}
	}
	b.mu.Unlock()
}

// lead sends one batch, then hands the lead on or ends the run.
func (b *batcher) lead() {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()
	b.send(batch)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.running = false
		return
	}
	close(b.queue[0].lead)
}

// send runs batch in one pipeline and resolves every call.
func (b *batcher) send(batch []*call) {
	sendBatch(context.Background(), b.client, b.opTimeout, batch)
}

// sendBatch runs batch in one pipeline, bounded by timeout, and resolves
// every call.
func sendBatch(ctx context.Context, client redis.UniversalClient, timeout time.Duration, batch []*call) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if len(batch) == 1 && batch[0].queue == nil {
		c := batch[0]
		c.n, c.err = c.script.Run(ctx, client, []string{c.key}, c.args...).Int64()
		return
	}
	pipe := client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		if c.queue != nil {
			c.queue(pipe)
			continue
		}
		cmds[i] = c.script.EvalSha(ctx, pipe, []string{c.key}, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range batch {
		if c.queue != nil {
			continue
		}
		c.n, c.err = cmds[i].Int64()
		if c.err != nil && serverError(c.err, "NOSCRIPT") {
			// The server lost its script cache: this call loads it.
			c.n, c.err = c.script.Run(ctx, client, []string{c.key}, c.args...).Int64()
		}
	}
}
