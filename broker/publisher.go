package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// ErrNacked is returned when the broker refused responsibility for a
// message (basic.nack). Nothing was stored; publishing again is safe.
var ErrNacked = errors.New("broker: message was nacked by the broker")

// UnroutableError is returned when a mandatory message matched no queue.
type UnroutableError struct {
	Exchange   string
	RoutingKey string
	MessageID  string
	ReplyCode  uint16
	ReplyText  string
}

func (e *UnroutableError) Error() string {
	return fmt.Sprintf("message %q to exchange %q with routing key %q is unroutable: %s (%d)",
		e.MessageID, e.Exchange, e.RoutingKey, e.ReplyText, e.ReplyCode)
}

// Publisher publishes with publisher confirms on its own channel. Many
// publishes are in flight at once; each call returns when the broker has
// confirmed its message, refused it, or ctx ended. It is safe for
// concurrent use and survives reconnects: a publish whose channel dies
// before the confirm is published again on the next channel, so a message
// may arrive twice but a nil error always means the broker stored it.
type Publisher struct {
	stats PublisherStats
	conn  *Conn
	log   *zap.Logger
	open  chan struct{} // a one-slot lock around opening a session
	mu    sync.Mutex
	sess  *pubSession
	// alone holds the free slots of publishAlone, each a channel of its
	// own that carries one publish at a time; slots lists them all.
	alone   chan *aloneSlot
	slots   []*aloneSlot
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	size    sizeLimit    // the broker's message size limit, once it named it
	tracer  trace.Tracer // nil when tracing is off
}

// PublisherStats counts what the broker answered to publishes.
type PublisherStats struct {
	Confirmed atomic.Uint64 // acked by the broker and routed
	Nacked    atomic.Uint64 // refused by the broker
	Returned  atomic.Uint64 // unroutable
}

// Stats returns the publisher's counters.
func (p *Publisher) Stats() *PublisherStats { return &p.stats }

// NewPublisher returns a publisher on c. Its channel opens on first use.
func (c *Conn) NewPublisher() *Publisher {
	p := &Publisher{
		conn:    c,
		log:     c.log.Named("publisher"),
		open:    make(chan struct{}, 1),
		alone:   make(chan *aloneSlot, aloneSlots),
		closing: make(chan struct{}),
		tracer:  c.tracer(),
	}
	for range aloneSlots {
		s := &aloneSlot{}
		p.slots = append(p.slots, s)
		p.alone <- s
	}
	return p
}

// Publish sends msg to exchange with routing key key, mandatory, and waits
// for the broker's confirm. An empty MessageID is filled with a new id.
// It returns nil only for a confirmed message; *UnroutableError when no
// queue took it; ErrNacked when the broker refused it three times, each on
// a new channel; *ChannelError when the broker closed the channel over
// this message (a missing exchange, a refused permission): a channel
// exception fails every publish in flight, so each of them is published
// again alone on a channel of its own, and only the one that fails there
// too gets the error; *MessageTooLargeError when the body is over the
// broker's max_message_size (once the broker has refused one body for its
// size, larger ones fail at once, without closing the channel under other
// publishes); a wrapped ctx error when ctx ended first (the message may or
// may not have been stored). An unset Timestamp is set to now, so that
// consumers can tell how long the message waited.
//
// With tracing on (Config.TracerProvider), each call is a producer span,
// a child of the span in ctx, and the message carries its context in
// its traceparent and tracestate headers.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg Message, opts ...PublishOption) error {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if !o.keepID {
		if msg.MessageID == "" {
			msg.MessageID = NewMessageID()
		}
		if msg.Timestamp.IsZero() {
			msg.Timestamp = time.Now()
		}
	}
	ctx, span := p.startPublish(ctx, exchange, key, &msg)
	err := p.publish(ctx, exchange, key, msg)
	EndSpan(span, err)
	return err
}

// publish publishes msg as it is and waits for the broker's answer.
func (p *Publisher) publish(ctx context.Context, exchange, key string, msg Message) error {
	if err := p.size.check(int64(len(msg.Body)), msg.MessageID, exchange, key); err != nil {
		return err
	}
	pub := msg.publishing()
	nacks := 0
	for {
		s, err := p.session(ctx)
		if err != nil {
			return err
		}
		pend, err := s.publish(ctx, exchange, key, &pub)
		if err != nil {
			if s.isDead() {
				continue
			}
			return fmt.Errorf("publishing message %q: %w", msg.MessageID, err)
		}
		select {
		case <-pend.done:
			var (
				ce *ChannelError
				tl *MessageTooLargeError
			)
			if pend.lost {
				continue
			}
			if errors.As(pend.err, &tl) {
				return pend.err // the same body would be refused again
			}
			if errors.Is(pend.err, ErrNacked) && nacks < maxNacks {
				// Not stored: publishing again is safe, on a new channel
				// (see liveSession).
				nacks++
				continue
			}
			if errors.As(pend.err, &ce) {
				// A channel exception fails every publish in flight, not
				// only the one that caused it: find out whose it is.
				return p.publishAlone(ctx, exchange, key, &pub, nacks)
			}
			p.count(pend.err)
			return pend.err
		case <-ctx.Done():
			s.forget(pend.tag)
			return fmt.Errorf("waiting for the confirm of message %q: %w", msg.MessageID, ctx.Err())
		}
	}
}

func (p *Publisher) count(err error) {
	var ue *UnroutableError
	switch {
	case err == nil:
		p.stats.Confirmed.Add(1)
	case errors.As(err, &ue):
		p.stats.Returned.Add(1)
	case errors.Is(err, ErrNacked):
		p.stats.Nacked.Add(1)
	}
}

// PublishOption is a per-call knob of Publish.
type PublishOption func(*publishOptions)

type publishOptions struct{ keepID bool }

// KeepMessageID publishes the message as it is: an empty MessageID (or
// Timestamp) stays empty. Copies of received messages (retries, dead letters) use it so
// that their properties stay unchanged.
func KeepMessageID() PublishOption { return func(o *publishOptions) { o.keepID = true } }

// aloneSlot is one channel of publishAlone. Its holder (who took it from
// Publisher.alone) owns sess, and writes it under Publisher.mu.
type aloneSlot struct{ sess *pubSession }

// publishAlone publishes pub after a channel exception failed it. The
// exception closed the channel under every publish in flight, and only
// one of them (or none: another client's action) caused it. Publishing
// them again together on a new channel lets a message that fails every
// time use up the tries of the others. So each goes again alone, on a
// channel that carries no other publish until its confirm: a channel
// exception there is the message's own, and is returned. Publishes that
// did not meet the exception go on on the shared channel; those that did
// share aloneSlots such channels. nacks is how often pub was nacked
// already.
func (p *Publisher) publishAlone(ctx context.Context, exchange, key string, pub *amqp.Publishing, nacks int) error {
	if err := p.size.check(int64(len(pub.Body)), pub.MessageId, exchange, key); err != nil {
		return err // learned meanwhile
	}
	var slot *aloneSlot
	select {
	case slot = <-p.alone:
	case <-ctx.Done():
		return fmt.Errorf("waiting to publish message %q again: %w", pub.MessageId, ctx.Err())
	case <-p.closing:
		return ErrClosed
	}
	defer func() { p.alone <- slot }()
	bo := backoff{min: p.conn.cfg.MinBackoff, max: p.conn.cfg.MaxBackoff}
	for {
		s := slot.sess
		if s == nil || s.isDead() || s.nacked.Load() {
			if s != nil {
				_ = s.ch.Close()
			}
			var err error
			if s, err = p.dialSession(ctx, func(s *pubSession) { slot.sess = s }); err != nil {
				if errors.Is(err, ErrClosed) || ctx.Err() != nil {
					return err
				}
				p.log.Warn("opening a publisher channel failed", zap.Error(err))
				if err := sleep(ctx, p.closing, bo.next()); err != nil {
					return err
				}
				continue
			}
		}
		pend, err := s.publish(ctx, exchange, key, pub)
		if err != nil {
			if s.isDead() {
				continue
			}
			return fmt.Errorf("publishing message %q: %w", pub.MessageId, err)
		}
		select {
		case <-pend.done:
			if pend.lost {
				continue
			}
			if errors.Is(pend.err, ErrNacked) && nacks < maxNacks {
				nacks++
				continue
			}
			p.count(pend.err)
			return pend.err
		case <-ctx.Done():
			// The message may still close the channel: the next holder
			// of the slot must not take that for its own.
			s.forget(pend.tag)
			s.markDead()
			_ = s.ch.Close()
			return fmt.Errorf("waiting for the confirm of message %q: %w", pub.MessageId, ctx.Err())
		}
	}
}

// Close closes the publisher's channels. Publishes in flight fail with
// ErrClosed.
func (p *Publisher) Close() error {
	p.once.Do(func() { close(p.closing) })
	// No session opens after this: dialSession checks closing under mu.
	p.mu.Lock()
	open := []*pubSession{p.sess}
	for _, slot := range p.slots {
		open = append(open, slot.sess)
	}
	p.mu.Unlock()
	for _, s := range open {
		if s != nil {
			_ = s.ch.Close()
		}
	}
	p.wg.Wait()
	return nil
}

// session returns the live session, opening one if needed.
func (p *Publisher) session(ctx context.Context) (*pubSession, error) {
	if s := p.liveSession(); s != nil {
		return s, nil
	}
	select {
	case p.open <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a publisher channel: %w", ctx.Err())
	case <-p.closing:
		return nil, ErrClosed
	}
	defer func() { <-p.open }()
	if s := p.liveSession(); s != nil {
		return s, nil
	}
	bo := backoff{min: p.conn.cfg.MinBackoff, max: p.conn.cfg.MaxBackoff}
	for {
		s, err := p.openSession(ctx)
		if err == nil {
			return s, nil
		}
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return nil, err
		}
		p.log.Warn("opening publisher channel failed", zap.Error(err))
		if err := sleep(ctx, p.closing, bo.next()); err != nil {
			return nil, err
		}
	}
}

func (p *Publisher) liveSession() *pubSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess != nil && !p.sess.isDead() && !p.sess.nacked.Load() {
		return p.sess
	}
	return nil
}

func (p *Publisher) openSession(ctx context.Context) (*pubSession, error) {
	var old *pubSession
	s, err := p.dialSession(ctx, func(s *pubSession) { old, p.sess = p.sess, s })
	if err != nil {
		return nil, err
	}
	if old != nil && !old.isDead() {
		// A nacked session is replaced: a quorum queue client on a
		// RabbitMQ 3.10 channel opened while the queue had no leader
		// goes on nacking every publish after a new leader is elected,
		// while a new channel is accepted. Its unconfirmed publishes are
		// marked lost when it closes, and published again here.
		p.log.Info("replacing the publisher channel after a nack")
		_ = old.ch.Close()
	}
	return s, nil
}

// dialSession opens a confirm-mode channel, records it with install
// (called under p.mu) and starts its confirm loop. Once Close has begun
// it returns ErrClosed and leaves nothing open.
func (p *Publisher) dialSession(ctx context.Context, install func(*pubSession)) (*pubSession, error) {
	select {
	case <-p.closing:
		return nil, ErrClosed
	default:
	}
	ch, gen, err := p.conn.channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enabling publisher confirms: %w", err)
	}
	s := &pubSession{ch: ch, gen: gen, size: &p.size, pending: map[uint64]*pending{}, dead: make(chan struct{})}
	// The client library sends a return and then the confirm that follows
	// it, in that order, from one goroutine. The loop drains every
	// buffered return before it handles a confirm, so a return is always
	// recorded before its confirm resolves the publish. Buffers let the
	// library go on reading while the loop catches up.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, confirmBuffer))
	returns := ch.NotifyReturn(make(chan amqp.Return, returnBuffer))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	p.mu.Lock()
	select {
	case <-p.closing: // Close ran while we opened: do not leave this behind.
		p.mu.Unlock()
		_ = ch.Close()
		return nil, ErrClosed
	default:
	}
	install(s)
	p.wg.Add(1) // before Close's Wait, which comes after its own look under mu
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		s.loop(p.log, confirms, returns, closed)
	}()
	return s, nil
}

// aloneSlots is how many channels publishAlone uses at most at once.
const aloneSlots = 4

// maxNacks is how often a nacked publish is tried again, each time on a
// new channel, before ErrNacked is returned.
const maxNacks = 2

// Buffers of the publisher's notification channels.
const (
	confirmBuffer = 512
	returnBuffer  = 64
)

// sleep waits d unless ctx ends or stop closes.
func sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrClosed
	}
}
