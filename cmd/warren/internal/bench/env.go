package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// env is what the cases share: the options, a plain admin connection for
// declaring, filling, counting and deleting queues, and a Redis client for
// cleaning up dedupe keys.
type env struct {
	opts Options
	// qtype is the queue type of the case being run.
	qtype broker.QueueType

	mu       sync.Mutex
	admin    *amqp.Connection
	redis    redis.UniversalClient
	warnings []string
}

func newEnv(opts Options) (*env, error) {
	e := &env{opts: opts}
	if _, err := e.conn(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.admin != nil {
		_ = e.admin.Close()
	}
	if e.redis != nil {
		_ = e.redis.Close()
	}
}

// warn records a surprise of the round being run.
func (e *env) warn(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.warnings = append(e.warnings, fmt.Sprintf(format, args...))
}

func (e *env) takeWarnings(round int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.warnings))
	for i, w := range e.warnings {
		out[i] = fmt.Sprintf("round %d: %s", round, w)
	}
	e.warnings = nil
	return out
}

// conn returns the admin connection, dialing again when it has closed.
func (e *env) conn() (*amqp.Connection, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.admin != nil && !e.admin.IsClosed() {
		return e.admin, nil
	}
	// Its goroutines serve every case: they get a label of their own.
	var (
		c   *amqp.Connection
		err error
	)
	pprof.Do(context.Background(), pprof.Labels("phase", "setup"), func(context.Context) {
		c, err = dial(e.opts.AMQPURL, "warren-bench-admin")
	})
	if err != nil {
		return nil, err
	}
	e.admin = c
	return c, nil
}

// dial opens a plain amqp091-go connection.
func dial(url, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	c, err := amqp.DialConfig(url, amqp.Config{Properties: props, Heartbeat: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("connecting to the broker: %w", err)
	}
	return c, nil
}

// withChannel runs fn on a fresh admin channel.
func (e *env) withChannel(fn func(ch *amqp.Channel) error) error {
	c, err := e.conn()
	if err != nil {
		return err
	}
	ch, err := c.Channel()
	if err != nil {
		return fmt.Errorf("opening an admin channel: %w", err)
	}
	defer ch.Close()
	return fn(ch)
}

// redisClient returns the Redis client, creating it on first use.
func (e *env) redisClient() (redis.UniversalClient, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.redis != nil {
		return e.redis, nil
	}
	opts, err := dedupe.ParseRedisURL(e.opts.RedisURL)
	if err != nil {
		return nil, err
	}
	e.redis = redis.NewUniversalClient(opts)
	return e.redis, nil
}

// name returns a fresh queue name for a case and round.
func (e *env) name(kind string, round int) string {
	return fmt.Sprintf("warren-bench-%s-r%d-%s", kind, round, uniqueSuffix())
}

// declarePlain declares a durable queue of the case's type, without other
// arguments.
func (e *env) declarePlain(name string) error {
	var args amqp.Table
	if e.qtype == broker.Quorum {
		args = amqp.Table{"x-queue-type": string(broker.Quorum)}
	}
	return e.withChannel(func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, true, false, false, false, args)
		if err != nil {
			return fmt.Errorf("declaring queue %q: %w", name, err)
		}
		return nil
	})
}

// declareTopology declares the queues of t the way warren does, so that
// the worker's own declaration of them matches.
func (e *env) declareTopology(t broker.Topology) error {
	if len(t.Exchanges) > 0 || len(t.Bindings) > 0 {
		return errors.New("bench topologies have no exchanges or bindings")
	}
	return e.withChannel(func(ch *amqp.Channel) error {
		for _, q := range t.Queues {
			args := amqp.Table{}
			for k, v := range q.Args {
				args[k] = v
			}
			if q.Type == broker.Quorum {
				args["x-queue-type"] = string(broker.Quorum)
			}
			if _, err := ch.QueueDeclare(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, args); err != nil {
				return fmt.Errorf("declaring queue %q: %w", q.Name, err)
			}
		}
		return nil
	})
}

// queueNames returns the names of t's queues.
func queueNames(t broker.Topology) []string {
	var names []string
	for _, q := range t.Queues {
		names = append(names, q.Name)
	}
	return names
}

// deleteQueues deletes the queues, reporting the first failure as a
// warning (a leftover queue spoils no measurement).
func (e *env) deleteQueues(names ...string) {
	for _, n := range names {
		err := e.withChannel(func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(n, false, false, false)
			return err
		})
		if err != nil {
			e.warn("deleting queue %q: %v", n, err)
		}
	}
}

// count returns the number of ready messages of a queue.
func (e *env) count(name string) (int, error) {
	var n int
	err := e.withChannel(func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("inspecting queue %q: %w", name, err)
		}
		n = q.Messages
		return nil
	})
	return n, err
}

// waitCount waits until a queue holds want ready messages, for at most
// timeout, and returns the last count.
func (e *env) waitCount(name string, want int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := e.count(name)
		if err != nil || n == want || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectEmpty checks that the queues hold no ready message.
func (e *env) expectEmpty(names ...string) error {
	for i, n := range names {
		timeout := 200 * time.Millisecond
		if i == 0 {
			timeout = 3 * time.Second
		}
		got, err := e.waitCount(n, 0, timeout)
		if err != nil {
			return err
		}
		if got != 0 {
			return fmt.Errorf("queue %q holds %d message(s) after the run, want 0", n, got)
		}
	}
	return nil
}

// body returns a body of n bytes.
func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// messageIDs returns n unique message ids.
func messageIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = prefix + "-" + strconv.Itoa(i)
	}
	return ids
}

// fillerChannel opens a confirmed channel on the admin connection for
// filling queues; the caller closes it.
func (e *env) fillerChannel() (*amqp.Channel, error) {
	c, err := e.conn()
	if err != nil {
		return nil, err
	}
	ch, err := c.Channel()
	if err != nil {
		return nil, fmt.Errorf("opening the filler channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("filler confirm mode: %w", err)
	}
	return ch, nil
}

// fillWindow is how many unconfirmed messages the filler keeps in flight.
const fillWindow = 1024

// fill publishes n persistent messages of size bytes with unique ids to
// queue through the default exchange, with confirms, and checks that the
// queue holds exactly n afterwards.
func (e *env) fill(ctx context.Context, queue string, n, size int) (err error) {
	pprof.Do(ctx, pprof.Labels("phase", "setup"), func(ctx context.Context) {
		err = e.fillLabelled(ctx, queue, n, size)
	})
	return err
}

func (e *env) fillLabelled(ctx context.Context, queue string, n, size int) error {
	ch, err := e.fillerChannel()
	if err != nil {
		return err
	}
	defer ch.Close()
	b := body(size)
	ids := messageIDs(queue, n)
	nacks, err := publishWindowed(ctx, ch, queue, b, ids, fillWindow)
	if err != nil {
		return fmt.Errorf("filling %q: %w", queue, err)
	}
	if nacks > 0 {
		return fmt.Errorf("filling %q: the broker nacked %d message(s)", queue, nacks)
	}
	got, err := e.waitCount(queue, n, 5*time.Second)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("filling %q: the queue holds %d message(s), want %d", queue, got, n)
	}
	return nil
}

// publishWindowed publishes one persistent message per id with deferred
// confirms, waiting for the oldest when window are unconfirmed, and then
// for all. It returns how many the broker nacked.
func publishWindowed(ctx context.Context, ch *amqp.Channel, queue string, b []byte, ids []string, window int) (nacks int, err error) {
	ring := make([]*amqp.DeferredConfirmation, window)
	head, size := 0, 0
	waitOldest := func() error {
		ok, err := ring[head].WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("waiting for a confirm: %w", err)
		}
		if !ok {
			nacks++
		}
		ring[head] = nil
		head = (head + 1) % window
		size--
		return nil
	}
	for _, id := range ids {
		if size == window {
			if err := waitOldest(); err != nil {
				return nacks, err
			}
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/octet-stream",
			MessageId:    id,
			Body:         b,
		})
		if err != nil {
			return nacks, fmt.Errorf("publishing: %w", err)
		}
		ring[(head+size)%window] = dc
		size++
	}
	for size > 0 {
		if err := waitOldest(); err != nil {
			return nacks, err
		}
	}
	return nacks, nil
}

// pingRedis checks that Redis answers, so that the dedupe case fails
// fast instead of sending every message round the retry tiers.
func (e *env) pingRedis(ctx context.Context) error {
	rc, err := e.redisClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rc.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis does not answer: %w", err)
	}
	return nil
}

// deleteKeys deletes every Redis key that starts with prefix+":" and
// returns how many there were.
func (e *env) deleteKeys(ctx context.Context, prefix string) (int, error) {
	rc, err := e.redisClient()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n := 0
	var cursor uint64
	for {
		keys, next, err := rc.Scan(ctx, cursor, prefix+":*", 1000).Result()
		if err != nil {
			return n, fmt.Errorf("scanning dedupe keys: %w", err)
		}
		if len(keys) > 0 {
			if err := rc.Del(ctx, keys...).Err(); err != nil {
				return n, fmt.Errorf("deleting dedupe keys: %w", err)
			}
			n += len(keys)
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}
