package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
)

// Settings of the publish cases.
const (
	baselineWindow    = 256
	warrenPublishers  = 8  // goroutines of warren-publish and baseline-publish-8
	batchPublishers   = 4  // goroutines of warren-publish-batch
	publishBatchSize  = 64 // messages per PublishBatch call
	publishErrSamples = 3
)

// baselinePublish publishes with plain amqp091-go: one confirmed channel,
// at most 256 unconfirmed messages, to a queue through the default
// exchange.
func (e *env) baselinePublish(ctx context.Context, round int) (Round, error) {
	n := e.opts.Messages
	q := e.name("baseline-publish", round)
	if err := e.declarePlain(q); err != nil {
		return Round{}, err
	}
	defer e.deleteQueues(q)
	conn, err := dial(e.opts.AMQPURL, "warren-bench-baseline-publish")
	if err != nil {
		return Round{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return Round{}, fmt.Errorf("opening a channel: %w", err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return Round{}, fmt.Errorf("confirm mode: %w", err)
	}
	b := body(BodySize)
	ids := messageIDs(q, n)
	tctx, cancel := context.WithTimeout(ctx, roundTimeout(n))
	defer cancel()

	start := time.Now()
	nacks, err := publishWindowed(tctx, ch, q, b, ids, baselineWindow)
	elapsed := time.Since(start)
	if err != nil {
		return Round{}, err
	}
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: n - nacks, Elapsed: elapsed,
		Detail: fmt.Sprintf("%d msgs confirmed in %s (window %d)", n-nacks, elapsed.Round(time.Millisecond), baselineWindow)}
	if nacks > 0 {
		return r, fmt.Errorf("the broker nacked %d message(s)", nacks)
	}
	if err := e.expectCount(q, n); err != nil {
		return r, err
	}
	return r, nil
}

// baselinePublish8 publishes with plain amqp091-go from 8 goroutines on
// one connection, each on a confirmed channel of its own, each publishing
// one message and waiting for its confirm before the next: the plain
// form of 8 concurrent callers that each need their message confirmed.
func (e *env) baselinePublish8(ctx context.Context, round int) (Round, error) {
	n := e.opts.Messages
	q := e.name("baseline-publish-8", round)
	if err := e.declarePlain(q); err != nil {
		return Round{}, err
	}
	defer e.deleteQueues(q)
	conn, err := dial(e.opts.AMQPURL, "warren-bench-baseline-publish-8")
	if err != nil {
		return Round{}, err
	}
	defer conn.Close()
	chans := make([]*amqp.Channel, warrenPublishers)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			return Round{}, fmt.Errorf("opening a channel: %w", err)
		}
		if err := chans[i].Confirm(false); err != nil {
			return Round{}, fmt.Errorf("confirm mode: %w", err)
		}
	}
	b := body(BodySize)
	ids := messageIDs(q, n)
	tctx, cancel := context.WithTimeout(ctx, roundTimeout(n))
	defer cancel()
	var next, nacks, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n) && tctx.Err() == nil; i = next.Add(1) - 1 {
				dc, err := ch.PublishWithDeferredConfirmWithContext(tctx, "", q, false, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, Body: b, MessageId: ids[i], ContentType: "application/octet-stream"})
				if err != nil {
					errs.Add(1)
					continue
				}
				if ok, err := dc.WaitContext(tctx); err != nil {
					errs.Add(1)
				} else if !ok {
					nacks.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := tctx.Err(); err != nil {
		return Round{}, fmt.Errorf("publishing: %w", err)
	}
	failed := int(nacks.Load() + errs.Load())
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: n - failed, Elapsed: elapsed,
		Detail: fmt.Sprintf("%d msgs confirmed in %s by %d goroutines, one channel each, each awaiting its confirm", n-failed, elapsed.Round(time.Millisecond), warrenPublishers)}
	if failed > 0 {
		return r, fmt.Errorf("%d publish(es) failed, %d of them nacked", failed, nacks.Load())
	}
	if err := e.expectCount(q, n); err != nil {
		return r, err
	}
	return r, nil
}

// warrenPublish publishes through broker.Publisher from 8 goroutines,
// each Publish returning after its confirm.
func (e *env) warrenPublish(ctx context.Context, round int) (Round, error) {
	return e.warrenPublishWith(ctx, round, "warren-publish", warrenPublishers, 1)
}

// warrenPublishBatch publishes with PublishBatch: a few goroutines, each
// with a batch of messages in flight.
func (e *env) warrenPublishBatch(ctx context.Context, round int) (Round, error) {
	return e.warrenPublishWith(ctx, round, "warren-publish-batch", batchPublishers, publishBatchSize)
}

func (e *env) warrenPublishWith(ctx context.Context, round int, kind string, goroutines, batch int) (Round, error) {
	n := e.opts.Messages
	q := e.name(kind, round)
	if err := e.declarePlain(q); err != nil {
		return Round{}, err
	}
	defer e.deleteQueues(q)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := broker.Dial(dctx, broker.Config{URL: e.opts.AMQPURL, Name: "warren-bench-publish", Logger: zap.NewNop()})
	dcancel()
	if err != nil {
		return Round{}, err
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	b := body(BodySize)
	ids := messageIDs(q, n)
	tctx, cancel := context.WithTimeout(ctx, roundTimeout(n))
	defer cancel()

	var (
		next    atomic.Int64
		errs    atomic.Int64
		mu      sync.Mutex
		samples []string
		wg      sync.WaitGroup
	)
	start := time.Now()
	fail := func(err error) {
		errs.Add(1)
		mu.Lock()
		if len(samples) < publishErrSamples {
			samples = append(samples, err.Error())
		}
		mu.Unlock()
	}
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := next.Add(int64(batch)) - int64(batch)
				if first >= int64(n) {
					return
				}
				last := min(first+int64(batch), int64(n))
				if batch == 1 {
					if err := pub.Publish(tctx, "", q, broker.Message{Body: b, MessageID: ids[first], ContentType: "application/octet-stream"}); err != nil {
						fail(err)
					}
					continue
				}
				out := make([]broker.Outgoing, 0, last-first)
				for i := first; i < last; i++ {
					out = append(out, broker.Outgoing{RoutingKey: q, Message: broker.Message{Body: b, MessageID: ids[i], ContentType: "application/octet-stream"}})
				}
				for _, err := range pub.PublishBatch(tctx, out) {
					if err != nil {
						fail(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := tctx.Err(); err != nil {
		return Round{}, fmt.Errorf("publishing: %w (%d error(s))", err, errs.Load())
	}
	failed := int(errs.Load())
	st := pub.Stats()
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: n - failed, Elapsed: elapsed,
		Detail: fmt.Sprintf("%d msgs confirmed in %s by %d goroutines (batches of %d); %d error(s); publisher stats: %d confirmed, %d nacked, %d returned",
			n-failed, elapsed.Round(time.Millisecond), goroutines, batch, failed, st.Confirmed.Load(), st.Nacked.Load(), st.Returned.Load())}
	if failed > 0 {
		return r, fmt.Errorf("%d Publish call(s) failed, e.g. %v", failed, samples)
	}
	if c := st.Confirmed.Load(); c != uint64(n) {
		return r, fmt.Errorf("the publisher counted %d confirms, want %d", c, n)
	}
	if err := e.expectCount(q, n); err != nil {
		return r, err
	}
	return r, nil
}

// expectCount checks that a queue holds exactly n ready messages.
func (e *env) expectCount(q string, n int) error {
	got, err := e.waitCount(q, n, 5*time.Second)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("queue %q holds %d message(s), want %d", q, got, n)
	}
	return nil
}
