package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

// Settings of the route cases: an ordered route (Route.Order) against a
// plain one with as many handlers, in the same run. The messages carry
// routeKeys keys taking turns (message i has key i mod routeKeys). Each
// handler waits routeWork: with a no-op handler the cases would compare
// the two consumers' per-message overhead alone (one channel with a
// prefetch of 32 against 16 channels of 2), while a short wait, as a
// handler's call to a database takes, makes the handlers' parallelism
// count, which is what ordering gives up: one handler per partition, and
// the keys spread over the partitions by a hash, not evenly.
const (
	routeKeys       = 100
	routePartitions = 16
	routeWork       = time.Millisecond
)

// routePlain is a plain route: 16 handlers, prefetch 32.
func (e *env) routePlain(ctx context.Context, round int) (Round, error) {
	return e.routeRate(ctx, round, false)
}

// routeOrdered is an ordered route of 16 partitions (one handler each,
// prefetch 2) behind a consistent-hash exchange. It needs the broker's
// rabbitmq_consistent_hash_exchange plugin, and fails when a key's
// messages were handled out of publish order.
func (e *env) routeOrdered(ctx context.Context, round int) (Round, error) {
	return e.routeRate(ctx, round, true)
}

// keyOrder tracks, per key, the sequence number of the last message
// handled, and counts the messages handled after a later one of their key.
type keyOrder struct {
	last       []atomic.Int64
	outOfOrder atomic.Int64
}

func newKeyOrder(keys int) *keyOrder {
	o := &keyOrder{last: make([]atomic.Int64, keys)}
	for i := range o.last {
		o.last[i].Store(-1)
	}
	return o
}

// see records message i (key i mod keys, sequence i div keys).
func (o *keyOrder) see(i int) {
	k, seq := i%len(o.last), int64(i/len(o.last))
	if prev := o.last[k].Swap(seq); prev >= seq {
		o.outOfOrder.Add(1)
	}
}

// routeRate fills a plain or an ordered route with the messages of
// routeKeys keys and measures from the first handler call until the
// handler has finished every message.
func (e *env) routeRate(ctx context.Context, round int, ordered bool) (Round, error) {
	n := e.opts.Messages
	kind := "route-plain"
	if ordered {
		kind = "route-ordered"
	}
	cfg := e.workerConfig(routePartitions, 2*routePartitions)
	cnt, order := newCounter(n), newKeyOrder(routeKeys)
	var bad atomic.Int64
	h := worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
		cnt.enter()
		i, err := strconv.Atoi(d.MessageID[strings.LastIndexByte(d.MessageID, '-')+1:])
		if err != nil {
			bad.Add(1)
			return worker.Permanent(err)
		}
		e.routeWait()
		order.see(i)
		cnt.hit()
		return nil
	})
	wr, mains, err := e.prepareRoute(ctx, kind, round, cfg, h, ordered)
	defer func() {
		wr.cleanup()
		if ordered {
			e.deleteExchange(wr.queue)
		}
	}()
	if err != nil {
		return Round{}, err
	}
	spread := ""
	if ordered {
		spread = e.partitionSpread(mains)
	}
	cpu := startCPU()
	wr.start(ctx)
	err = waitFor(ctx, cnt.done, wr.runErr, roundTimeout(n), func() string {
		return fmt.Sprintf("the handler finished %d of %d", cnt.calls.Load(), n)
	})
	elapsed, cpuUsed := cnt.elapsed(wr.started, true), cpu.perMessage(n)
	stopTook, stopErr := wr.stop()
	if err != nil {
		return Round{}, err
	}
	held := ""
	if ordered && order.outOfOrder.Load() == 0 {
		held = "every key's messages handled in publish order"
	}
	r := Round{Value: rate(n, elapsed), Expected: n, Processed: int(cnt.calls.Load()), Elapsed: elapsed,
		Detail: joinNonEmpty(fmt.Sprintf("%d msgs of %d keys in %s%s; stop took %s", n, routeKeys, elapsed.Round(time.Millisecond),
			timedFrom(true, "handler call"), stopTook.Round(time.Millisecond)), spread, held, cpuUsed)}
	switch {
	case stopErr != nil:
		return r, stopErr
	case bad.Load() > 0:
		return r, fmt.Errorf("%d message(s) without a numbered id", bad.Load())
	case r.Processed != n:
		return r, fmt.Errorf("the handler ran %d time(s) for %d messages", r.Processed, n)
	case ordered && order.outOfOrder.Load() > 0:
		return r, fmt.Errorf("%d message(s) handled after a later message of their key on an ordered route", order.outOfOrder.Load())
	}
	return r, e.verifyRoute(wr, mains, n)
}

// routeWait is a route case handler's wait, as Options.IOWait says.
func (e *env) routeWait() {
	if e.opts.IOWait == WaitSyscall {
		blockingSleep(routeWork)
		return
	}
	time.Sleep(routeWork)
}

// prepareRoute builds a worker with the route case's route, declares its
// topology as warren does and fills it with n messages: to the queue, or
// for an ordered route to its exchange with the key as routing key.
// mains are the queues the messages land in (the partitions of an
// ordered route). Call wr.cleanup afterwards, even on error.
func (e *env) prepareRoute(ctx context.Context, kind string, round int, cfg worker.Config, h worker.Handler, ordered bool) (*workerRound, []string, error) {
	wr := &workerRound{e: e, queue: e.name(kind, round)}
	route := worker.Route{Queue: wr.queue, Handler: h}
	mains := []string{wr.queue}
	exchange := ""
	if ordered {
		exchange = wr.queue
		route.Exchange, route.Order = exchange, worker.Order{Partitions: routePartitions}
		mains = mains[:0]
		for i := range routePartitions {
			mains = append(mains, worker.PartitionQueue(wr.queue, i))
		}
	}
	w, err := worker.New(cfg)
	if err != nil {
		return wr, nil, fmt.Errorf("worker.New: %w", err)
	}
	if err := w.Handle(route); err != nil {
		return wr, nil, fmt.Errorf("worker.Handle: %w", err)
	}
	wr.w = w
	wr.topo = w.Topology()
	if err := e.declareRoute(wr.topo); err != nil {
		return wr, nil, err
	}
	if err := e.fillKeyed(ctx, exchange, wr.queue, mains, e.opts.Messages); err != nil {
		return wr, nil, err
	}
	return wr, mains, nil
}

// declareRoute declares t (exchanges, queues, bindings) the way warren
// does, so that the worker's own declaration matches. A broker without
// the consistent-hash exchange type fails with what to enable.
func (e *env) declareRoute(t broker.Topology) error {
	for _, x := range t.Exchanges {
		err := e.withChannel(func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare(x.Name, x.Kind, !x.Transient, x.AutoDelete, x.Internal, false, amqp.Table(x.Args))
		})
		var ae *amqp.Error
		if err != nil && x.Kind == broker.ConsistentHash && errors.As(err, &ae) && ae.Code == amqp.CommandInvalid {
			return fmt.Errorf("the broker has no %s exchange type: enable the rabbitmq_consistent_hash_exchange plugin "+
				"(rabbitmq-plugins enable rabbitmq_consistent_hash_exchange): %w", x.Kind, err)
		}
		if err != nil {
			return fmt.Errorf("declaring exchange %q: %w", x.Name, err)
		}
	}
	if err := e.declareTopology(broker.Topology{Queues: t.Queues}); err != nil {
		return err
	}
	return e.withChannel(func(ch *amqp.Channel) error {
		for _, b := range t.Bindings {
			if err := ch.QueueBind(b.Queue, b.RoutingKey, b.Exchange, false, amqp.Table(b.Args)); err != nil {
				return fmt.Errorf("binding %q to %q: %w", b.Queue, b.Exchange, err)
			}
		}
		return nil
	})
}

// deleteExchange deletes an exchange, reporting a failure as a warning.
func (e *env) deleteExchange(name string) {
	err := e.withChannel(func(ch *amqp.Channel) error { return ch.ExchangeDelete(name, false, false) })
	if err != nil {
		e.warn("deleting exchange %q: %v", name, err)
	}
}

// fillKeyed publishes n persistent messages with ids prefix-0 ...
// prefix-<n-1> to exchange, message i with routing key k<i mod routeKeys>
// ("" exchange: to the queue prefix), with confirms, and checks that the
// queues mains hold n between them.
func (e *env) fillKeyed(ctx context.Context, exchange, prefix string, mains []string, n int) error {
	ch, err := e.fillerChannel()
	if err != nil {
		return err
	}
	defer ch.Close()
	b := body(BodySize)
	var pending []*amqp.DeferredConfirmation
	nacks := 0
	for i := range n {
		key := prefix
		if exchange != "" {
			key = "k" + strconv.Itoa(i%routeKeys)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream",
			MessageId: prefix + "-" + strconv.Itoa(i), Body: b,
		})
		if err != nil {
			return fmt.Errorf("filling %q: publishing: %w", prefix, err)
		}
		pending = append(pending, dc)
		if len(pending) == fillWindow || i == n-1 {
			for _, dc := range pending {
				ok, err := dc.WaitContext(ctx)
				if err != nil {
					return fmt.Errorf("filling %q: waiting for a confirm: %w", prefix, err)
				}
				if !ok {
					nacks++
				}
			}
			pending = pending[:0]
		}
	}
	if nacks > 0 {
		return fmt.Errorf("filling %q: the broker nacked %d message(s)", prefix, nacks)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := e.total(mains)
		if err != nil || got == n {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("filling %q: its queues hold %d message(s), want %d", prefix, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// total is the ready messages of the queues together.
func (e *env) total(queues []string) (int, error) {
	sum := 0
	for _, q := range queues {
		n, err := e.count(q)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

// partitionSpread says how the keys' messages fell on the partitions.
func (e *env) partitionSpread(parts []string) string {
	lo, hi := -1, 0
	for _, q := range parts {
		n, err := e.count(q)
		if err != nil {
			return ""
		}
		hi = max(hi, n)
		if lo < 0 || n < lo {
			lo = n
		}
	}
	return fmt.Sprintf("%d partitions held %d to %d messages", len(parts), lo, hi)
}

// verifyRoute checks, after stop, that every queue of the route is empty
// and that the worker settled exactly n messages on mains, all with an
// ack.
func (e *env) verifyRoute(wr *workerRound, mains []string, n int) error {
	if err := e.expectEmpty(queueNames(wr.topo)...); err != nil {
		return err
	}
	acks, total := 0.0, 0.0
	for _, q := range mains {
		for o, v := range outcomes(wr.w, q) {
			total += v
			if o == string(worker.OutcomeAck) {
				acks += v
			}
		}
	}
	if acks != float64(n) || total != float64(n) {
		return fmt.Errorf("worker settled %.0f message(s), %.0f of them with an ack; want %d acks and nothing else", total, acks, n)
	}
	return nil
}
