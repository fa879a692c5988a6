package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
)

// DefaultPrefetch is the prefetch count of a consumer when none is given.
const DefaultPrefetch = 32

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Queue to consume from. Required.
	Queue string
	// Prefetch is how many unsettled deliveries the broker may send ahead.
	// 0 means DefaultPrefetch.
	Prefetch int
	// Tag prefixes the consumer tag; a counter and the host are appended.
	// "" means "warren".
	Tag string
	// AckBatch is how many finished deliveries wait to share one
	// multiple-ack (they wait 10ms at most). 0 means half the prefetch.
	// Keep it well below Prefetch minus the deliveries being worked on, or
	// the broker runs out of window to send ahead.
	AckBatch int
	// Exclusive asks to be the queue's only consumer.
	Exclusive bool
	// Args are basic.consume arguments, such as x-priority.
	Args map[string]any
}

var consumerSeq atomic.Uint64

// Consumer consumes one queue on a channel of its own, re-opening the
// channel after any loss. Deliveries from every channel generation arrive
// on one Go channel.
type Consumer struct {
	conn *Conn
	cfg  ConsumerConfig
	log  *zap.Logger
	out  chan *Delivery

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{} // the run loop has returned

	active atomic.Bool // a subscription is open

	sub subscription // paused or not, and the prefetch to subscribe with

	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup // settlers
}

// Consume starts consuming cfg.Queue. Read Deliveries, settle each one,
// then Stop and Close.
func (c *Conn) Consume(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Queue == "" {
		return nil, errors.New("consumer: queue is required")
	}
	if cfg.Prefetch < 0 || cfg.Prefetch > 65535 {
		return nil, fmt.Errorf("consumer %q: prefetch must be between 0 and 65535, got %d", cfg.Queue, cfg.Prefetch)
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if cfg.AckBatch <= 0 {
		cfg.AckBatch = max(1, cfg.Prefetch/2)
	}
	if cfg.Tag == "" {
		cfg.Tag = "warren"
	}
	host, _ := os.Hostname()
	cfg.Tag = fmt.Sprintf("%s-%s-%d-%d", cfg.Tag, host, os.Getpid(), consumerSeq.Add(1))
	// The hand-out buffer lets a reader take the deliveries at hand in
	// one go (the worker claims them in one Redis round trip).
	cn := &Consumer{
		conn: c, cfg: cfg,
		log:      c.log.Named("consumer").With(zap.String("queue", cfg.Queue)),
		out:      make(chan *Delivery, cfg.Prefetch),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		sessions: map[*session]struct{}{},
	}
	cn.sub.prefetch, cn.sub.changed = cfg.Prefetch, make(chan struct{})
	go cn.run()
	return cn, nil
}

// Active reports whether the consumer has an open subscription right now.
func (cn *Consumer) Active() bool { return cn.active.Load() }

// Deliveries returns the stream of deliveries. It is closed after Stop,
// once no more deliveries will come.
func (cn *Consumer) Deliveries() <-chan *Delivery { return cn.out }

// Stop cancels the subscription. Deliveries the broker already sent but
// that were not yet handed out are returned to the queue. Deliveries
// handed out can still be settled until Close.
func (cn *Consumer) Stop() {
	cn.stopOnce.Do(func() { close(cn.stop) })
	<-cn.done
}

// Close stops the consumer, sends the acks still pending, and closes its
// channels. Settle every handed-out delivery before calling Close: later
// results are dropped and those messages are delivered again.
func (cn *Consumer) Close() error {
	cn.Stop()
	cn.mu.Lock()
	for s := range cn.sessions {
		select {
		case <-s.finish:
		default:
			close(s.finish)
		}
	}
	cn.mu.Unlock()
	cn.wg.Wait()
	return nil
}

func (cn *Consumer) stopped() bool {
	select {
	case <-cn.stop:
		return true
	default:
		return false
	}
}

func (cn *Consumer) run() {
	defer close(cn.done)
	defer close(cn.out)
	defer cn.requeueBuffered()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-cn.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	bo := backoff{min: cn.conn.cfg.MinBackoff, max: cn.conn.cfg.MaxBackoff}
	first := true
	for !cn.stopped() {
		if !cn.waitResume() {
			return
		}
		s, deliveries, prefetch, err := cn.open(ctx)
		if err != nil {
			if cn.stopped() || errors.Is(err, ErrClosed) {
				return
			}
			cn.log.Warn("consume failed, retrying", zap.Error(err))
			if sleep(ctx, cn.stop, bo.next()) != nil {
				return
			}
			continue
		}
		if first {
			cn.log.Info("consuming", zap.Int("prefetch", cn.cfg.Prefetch))
		} else {
			cn.log.Info("consuming again")
		}
		first = false
		cn.active.Store(true)
		delivered, changed := cn.pump(s, deliveries, prefetch)
		cn.active.Store(false)
		if delivered {
			bo.reset()
		}
		if cn.stopped() {
			return
		}
		close(s.retire)
		if changed {
			cn.changed()
			continue
		}
		if !s.serverCancelled() {
			cn.log.Warn("consumer channel ended, reopening")
			continue
		}
		// basic.cancel from the broker: the queue was deleted, or (newer
		// brokers) the consumer timed out. Declare the topology again,
		// so that a deleted queue is back before consuming again.
		cn.log.Warn("the broker cancelled the subscription, declaring again and consuming again")
		if err := cn.conn.Redeclare(ctx); err != nil && !cn.stopped() {
			cn.log.Warn("declaring the topology again failed", zap.Error(err))
		}
	}
}

// open starts a session: a channel with QoS and a subscription. It
// returns the prefetch it subscribed with.
func (cn *Consumer) open(ctx context.Context) (*session, <-chan amqp.Delivery, int, error) {
	_, prefetch, _ := cn.sub.get()
	ch, _, err := cn.conn.channel(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, nil, 0, fmt.Errorf("setting prefetch on %q: %w", cn.cfg.Queue, err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	// The client library sends a server's basic.cancel here before it
	// closes the deliveries: one subscription, one cancel at most.
	cancels := ch.NotifyCancel(make(chan string, 1))
	deliveries, err := ch.Consume(cn.cfg.Queue, cn.cfg.Tag, false, cn.cfg.Exclusive, false, false, amqp.Table(cn.cfg.Args))
	if err != nil {
		_ = ch.Close()
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			if derr := cn.conn.Redeclare(ctx); derr != nil {
				cn.log.Warn("declaring the topology again failed", zap.Error(derr))
			}
		}
		return nil, nil, 0, fmt.Errorf("consuming %q: %w", cn.cfg.Queue, err)
	}
	s := newSession(ch, ch, cn.log, cn.cfg.AckBatch)
	s.cancels = cancels
	cn.mu.Lock()
	cn.sessions[s] = struct{}{}
	cn.mu.Unlock()
	cn.wg.Add(1)
	go func() {
		defer cn.wg.Done()
		s.run(closed)
		cn.mu.Lock()
		delete(cn.sessions, s)
		cn.mu.Unlock()
	}()
	return s, deliveries, prefetch, nil
}

// pump hands deliveries out until the subscription ends, Stop, or a
// Pause or a new prefetch (changed). It reports whether anything was
// delivered. While deliveries keep coming it takes each one, and hands it
// out, without blocking (a select over one channel and a default, far
// cheaper than one over three): it blocks, watching Stop and changes too,
// only when the broker has sent nothing or the reader is behind. Stop and
// changes are checked before each delivery all the same.
func (cn *Consumer) pump(s *session, deliveries <-chan amqp.Delivery, prefetch int) (delivered, changed bool) {
	paused, want, wake := cn.sub.get()
	for {
		if cn.stopped() {
			cn.cancel(s, deliveries)
			return delivered, false
		}
		if closedNow(wake) {
			paused, want, wake = cn.sub.get()
		}
		if paused || want != prefetch {
			cn.cancel(s, deliveries)
			return delivered, true
		}
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
		default:
			select {
			case <-cn.stop:
				continue
			case <-wake:
				continue
			case d, ok = <-deliveries:
			}
		}
		if !ok {
			// The broker cancelled the subscription or the channel
			// closed. If Stop comes now, run returns without retiring
			// the session: it must know that the subscription is over,
			// or Close would close the channel without settleGrace.
			s.endSubscription()
			return delivered, false
		}
		delivered = true
		if !cn.handOut(cn.wrap(s, &d), prefetch, wake) && cn.stopped() {
			cn.cancel(s, deliveries)
			return delivered, false
		}
	}
}

// closedNow reports whether c is closed, without blocking.
func closedNow(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// handOut passes del to the reader. It returns false, del requeued, when
// Stop comes first or the subscription is to change (a pause, another
// prefetch); a change undone meanwhile (a pause then a resume, as the
// outage breaker's probes do) keeps del.
func (cn *Consumer) handOut(del *Delivery, prefetch int, wake <-chan struct{}) bool {
	select {
	case cn.out <- del:
		return true // room in the buffer: the usual case
	default:
	}
	for {
		select {
		case cn.out <- del:
			return true
		case <-cn.stop:
		case <-wake:
			var paused bool
			var want int
			paused, want, wake = cn.sub.get()
			if !paused && want == prefetch {
				continue
			}
		}
		_ = del.Nack(true)
		return false
	}
}

func (cn *Consumer) wrap(s *session, d *amqp.Delivery) *Delivery {
	s.delivered.Store(d.DeliveryTag)
	del := &Delivery{
		Message:      messageOf(d),
		Exchange:     d.Exchange,
		RoutingKey:   d.RoutingKey,
		Queue:        cn.cfg.Queue,
		Redelivered:  d.Redelivered,
		DeliveryTag:  d.DeliveryTag,
		Acknowledger: s,
	}
	if n, ok := d.Headers["x-delivery-count"].(int64); ok {
		del.DeliveryCount = n
	}
	return del
}

// requeueBuffered returns deliveries that wait in the hand-out buffer
// after Stop: no one started them. (A reader may take some of them at the
// same time; each delivery goes one way or the other.)
func (cn *Consumer) requeueBuffered() {
	n := 0
	for {
		select {
		case d := <-cn.out:
			_ = d.Nack(true)
			n++
		default:
			if n > 0 {
				cn.log.Info("requeued buffered deliveries", zap.Int("requeued", n))
			}
			return
		}
	}
}

// cancel ends the subscription and requeues what the broker sent after.
func (cn *Consumer) cancel(s *session, deliveries <-chan amqp.Delivery) {
	s.endSubscription()
	if err := s.ch.Cancel(cn.cfg.Tag, false); err != nil {
		cn.log.Debug("cancel failed", zap.Error(err))
		return // the channel is gone; the broker requeues by itself
	}
	n := 0
	for d := range deliveries {
		s.delivered.Store(d.DeliveryTag)
		_ = s.settle(d.DeliveryTag, settleRequeue)
		n++
	}
	cn.log.Info("consumer stopped", zap.Int("requeued", n))
}
