package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
)

// pubSession is one confirm-mode channel and its unconfirmed publishes.
type pubSession struct {
	ch   *amqp.Channel
	gen  <-chan struct{} // closed when the channel's connection ends
	size *sizeLimit

	// send serializes taking a sequence number and writing the message,
	// so the number is the one the broker will confirm.
	send sync.Mutex

	// mu guards pending. It is never held while calling the client
	// library, so the confirm loop can always make progress.
	mu       sync.Mutex
	pending  map[uint64]*pending
	dead     chan struct{}
	deadOnce sync.Once

	// nacked is set by the first nack: the channel is then replaced (see
	// Publisher.session).
	nacked atomic.Bool
}

type pending struct {
	tag      uint64
	id       string
	exchange string
	key      string
	size     int64 // of the body
	done     chan struct{}
	err      error
	returned *UnroutableError
	lost     bool // the channel closed before the confirm
}

func (s *pubSession) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

func (s *pubSession) publish(ctx context.Context, exchange, key string, pub *amqp.Publishing) (*pending, error) {
	p := &pending{id: pub.MessageId, exchange: exchange, key: key, size: int64(len(pub.Body)), done: make(chan struct{})}
	s.send.Lock()
	defer s.send.Unlock()
	p.tag = s.ch.GetNextPublishSeqNo()
	s.mu.Lock()
	s.pending[p.tag] = p
	s.mu.Unlock()
	if err := s.ch.PublishWithContext(ctx, exchange, key, true, false, *pub); err != nil {
		s.forget(p.tag)
		if ctx.Err() != nil {
			return nil, err // only this publish gave up; the channel is fine
		}
		if s.ch.IsClosed() || isConnErr(err) {
			// The connection broke under the write: nothing was stored,
			// and the caller publishes again on the next channel.
			s.markDead()
			_ = s.ch.Close()
		}
		return nil, err
	}
	return p, nil
}

func (s *pubSession) forget(tag uint64) {
	s.mu.Lock()
	delete(s.pending, tag)
	s.mu.Unlock()
}

func (s *pubSession) markDead() { s.deadOnce.Do(func() { close(s.dead) }) }

// loop resolves publishes from the broker's returns and confirms until the
// channel closes, then marks every unconfirmed publish lost.
func (s *pubSession) loop(log *zap.Logger, confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closed <-chan *amqp.Error) {
	var reason *amqp.Error
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			s.returned(r)
		case c, ok := <-confirms:
			returns = s.drainReturns(returns)
			if !ok {
				if reason == nil {
					select {
					case reason = <-closed:
					default:
					}
				}
				s.close(reason)
				return
			}
			s.confirmed(c)
		case err, ok := <-closed:
			if !ok {
				closed = nil
				continue
			}
			if err != nil {
				reason = err
				log.Warn("publisher channel closed", zap.String("reason", err.Error()))
			}
		}
	}
}

// drainReturns records every return already buffered. It returns nil
// once the returns channel is closed.
func (s *pubSession) drainReturns(returns <-chan amqp.Return) <-chan amqp.Return {
	for returns != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				return nil
			}
			s.returned(r)
		default:
			return returns
		}
	}
	return nil
}

// returned marks the unconfirmed publishes that match r. A return names
// no delivery tag, so when several publishes in flight share id, exchange
// and key, all of them are marked: a routed one then reports unroutable
// and is published again (a duplicate), rather than an unroutable one
// reporting success.
func (s *pubSession) returned(r amqp.Return) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pending {
		if p.returned == nil && p.id == r.MessageId && p.exchange == r.Exchange && p.key == r.RoutingKey {
			p.returned = &UnroutableError{Exchange: r.Exchange, RoutingKey: r.RoutingKey,
				MessageID: r.MessageId, ReplyCode: r.ReplyCode, ReplyText: r.ReplyText}
		}
	}
}

func (s *pubSession) confirmed(c amqp.Confirmation) {
	s.mu.Lock()
	p := s.pending[c.DeliveryTag]
	delete(s.pending, c.DeliveryTag)
	s.mu.Unlock()
	if p == nil {
		return // its caller gave up waiting
	}
	switch {
	case !c.Ack:
		p.err = ErrNacked
		s.nacked.Store(true)
	case p.returned != nil:
		p.err = p.returned
	}
	close(p.done)
}

// close resolves every unconfirmed publish. After a connection loss they
// are marked lost, to be published again on a new channel. A channel
// exception (a soft error such as a missing exchange) was caused by
// something published here, so it is returned to the callers instead:
// publishing the same message again would fail again. A size refusal
// names the size of the message that caused it: that message fails with
// *MessageTooLargeError, and the others, refused only because they shared
// its channel, are published again.
func (s *pubSession) close(reason *amqp.Error) {
	s.markDead()
	_, limit, tooLarge := sizeLimitOf(reason)
	if tooLarge && s.size != nil {
		s.size.learn(limit, reason, s.gen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for tag, p := range s.pending {
		switch {
		case tooLarge && p.size > limit:
			p.err = &MessageTooLargeError{MessageID: p.id, Exchange: p.exchange, RoutingKey: p.key,
				Size: p.size, Limit: limit, Err: &ChannelError{Err: reason}}
		case tooLarge:
			p.lost = true
		case reason != nil && reason.Recover:
			p.err = &ChannelError{Err: reason}
		default:
			p.lost = true
		}
		close(p.done)
		delete(s.pending, tag)
	}
}

// ChannelError is returned when the broker closed the publisher's channel
// with a channel exception while a message was unconfirmed, for example
// because the exchange does not exist or the message is too large.
type ChannelError struct{ Err *amqp.Error }

func (e *ChannelError) Error() string {
	return fmt.Sprintf("broker closed the publisher channel: %s (%d)", e.Err.Reason, e.Err.Code)
}

func (e *ChannelError) Unwrap() error { return e.Err }
