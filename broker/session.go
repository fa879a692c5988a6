package broker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
)

// ErrStale is returned when settling a delivery whose channel has closed.
// The broker has requeued it; it will be delivered again.
var ErrStale = errors.New("broker: delivery belongs to a closed channel")

type settleKind uint8

const (
	settleAck    settleKind = iota + 1
	settleAckNow            // an ack that goes out at once, not waiting for others
	settleRequeue
	settleReject
	settleSent // internal: already settled on the wire
)

// ackDelay bounds how long a finished delivery's ack may wait to be
// coalesced with others before it is sent. A busy channel sends its acks
// on the batch count long before this; the delay serves slow traffic,
// where a longer one means fewer wake-ups and ack frames (measured: 2ms
// cost the I/O-bound bench 5% against 10ms) while the number of finished
// but unacked messages stays bounded by the batch.
const ackDelay = 10 * time.Millisecond

// settleGrace is how long a channel stays open after the last
// settlement it sent once its subscription ended. A quorum queue's
// broker-side client sends at most 32 commands ahead of the queue and
// holds back further settlements until the queue has applied earlier
// ones; what it holds back when the channel closes is lost, and those
// messages are delivered again although they were acked. After the
// subscription ends, acks are therefore sent as one multiple-ack per
// ackDelay at most (few commands), and the channel closes only once the
// queue has had settleGrace to apply them.
const settleGrace = 100 * time.Millisecond

// ackWire is the part of a channel the settler writes to.
type ackWire interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	Close() error
}

// session is one consumer channel and its acks. Acks are coalesced: the
// contiguous finished prefix of delivery tags goes out as one
// multiple-ack once batch acks wait or ackDelay has passed, so a busy
// channel sends far fewer ack frames than messages. A multiple-ack never
// covers an unfinished delivery; finished ones stuck behind an unfinished
// one are acked one by one after ackDelay. Nacks go out at once. Handler
// goroutines settle under a mutex: no goroutine hop per message.
type session struct {
	ch    *amqp.Channel // for basic.cancel; nil in unit tests
	wire  ackWire
	log   *zap.Logger
	batch int

	mu      sync.Mutex
	dead    bool
	base    uint64 // every tag <= base is settled on the wire
	pending map[uint64]settleKind
	unsent  int // acks recorded and not yet on the wire
	timer   *time.Timer
	armed   bool
	retired bool
	// ended: the subscription is cancelled or retiring; acks wait for
	// the timer or the close and go out as few frames as can be.
	ended    bool
	lastSent time.Time // the last settlement written after ended

	cancels   <-chan string // a server's basic.cancel of the subscription
	deadCh    chan struct{} // closed when the channel is gone
	delivered atomic.Uint64 // highest tag handed out
	retire    chan struct{} // close the channel once everything is settled
	finish    chan struct{} // flush and close the channel now
	done      chan struct{} // the lifecycle goroutine has returned
}

func newSession(ch *amqp.Channel, wire ackWire, log *zap.Logger, batch int) *session {
	s := &session{
		ch: ch, wire: wire, log: log,
		batch:   max(1, batch),
		pending: map[uint64]settleKind{},
		deadCh:  make(chan struct{}),
		retire:  make(chan struct{}),
		finish:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.timer = time.AfterFunc(time.Hour, s.onTimer)
	s.timer.Stop()
	return s
}

// Ack, AckNow, Nack and Closed make a session its deliveries' Acknowledger.
func (s *session) Ack(tag uint64) error    { return s.settle(tag, settleAck) }
func (s *session) AckNow(tag uint64) error { return s.settle(tag, settleAckNow) }
func (s *session) Closed() bool            { return s.isDead() }
func (s *session) Nack(tag uint64, requeue bool) error {
	if requeue {
		return s.settle(tag, settleRequeue)
	}
	return s.settle(tag, settleReject)
}

// serverCancelled reports whether the broker cancelled the subscription
// (basic.cancel), as opposed to closing the channel.
func (s *session) serverCancelled() bool {
	select {
	case _, ok := <-s.cancels:
		return ok
	default:
		return false
	}
}

func (s *session) isDead() bool {
	select {
	case <-s.deadCh:
		return true
	default:
		return false
	}
}

// settle records a result for tag and sends what is due.
func (s *session) settle(tag uint64, kind settleKind) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return ErrStale
	}
	if tag <= s.base {
		return nil
	}
	if s.ended && kind == settleAckNow {
		kind = settleAck // no frame of its own once the subscription ended
	}
	switch kind {
	case settleAck:
		s.pending[tag] = settleAck
		s.unsent++
	case settleAckNow:
		s.pending[tag] = settleAck
		s.unsent++
		s.flushLocked(false) // the finished prefix goes out, with tag if it is in it
		if s.pending[tag] == settleAck {
			// It waits behind an unfinished delivery: alone, then.
			if err := s.wire.Ack(tag, false); err != nil {
				s.log.Debug("ack not sent", zap.Error(err))
			}
			s.pending[tag] = settleSent
			s.unsent--
		}
		s.afterLocked()
		return nil
	default:
		if err := s.wire.Nack(tag, false, kind == settleRequeue); err != nil {
			s.log.Debug("nack not sent", zap.Error(err))
		}
		s.sentLocked()
		s.pending[tag] = settleSent
	}
	if !s.ended && (s.unsent >= s.batch || kind != settleAck) {
		s.flushLocked(false)
	}
	s.afterLocked()
	return nil
}

// afterLocked arms the timer for acks still waiting, and closes a retired
// channel once everything on it is settled.
func (s *session) afterLocked() {
	// Nacks and single acks already on the wire need no frame: base
	// passes them now, or a retired channel whose last settlements were
	// nacks would never count as settled (no ack waits to move base).
	for s.pending[s.base+1] == settleSent {
		delete(s.pending, s.base+1)
		s.base++
	}
	switch {
	case s.unsent > 0 && !s.armed:
		s.timer.Reset(ackDelay)
		s.armed = true
	case s.unsent == 0 && s.armed:
		s.timer.Stop()
		s.armed = false
	}
	if s.retired && s.base >= s.delivered.Load() {
		s.closeLocked()
	}
}

func (s *session) onTimer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	if s.dead {
		return
	}
	s.flushLocked(!s.ended)
	s.afterLocked()
}

// endSubscription records that no delivery comes on this channel any
// more (see settleGrace).
func (s *session) endSubscription() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
}

// sentLocked records a settlement written to the wire.
func (s *session) sentLocked() {
	if s.ended {
		s.lastSent = time.Now()
	}
}

// flushLocked acks the finished prefix with one multiple-ack. With force,
// or when many acks wait behind an unfinished delivery while the
// subscription lasts, those are sent one by one.
func (s *session) flushLocked(force bool) {
	var last uint64
	for {
		kind, ok := s.pending[s.base+1]
		if !ok {
			break
		}
		delete(s.pending, s.base+1)
		s.base++
		if kind == settleAck {
			last = s.base
			s.unsent--
		}
	}
	if last > 0 {
		if err := s.wire.Ack(last, true); err != nil {
			s.log.Debug("ack not sent", zap.Error(err))
		}
		s.sentLocked()
	}
	if s.unsent == 0 || (!force && (s.ended || s.unsent < 2*s.batch)) {
		return
	}
	for tag, kind := range s.pending {
		if kind == settleAck {
			if err := s.wire.Ack(tag, false); err != nil {
				s.log.Debug("ack not sent", zap.Error(err))
			}
			s.pending[tag] = settleSent
		}
	}
	s.sentLocked()
	s.unsent = 0
}

// closeLocked flushes everything and marks the session dead; run closes
// the channel (after settleGrace, when settlements went out after the
// subscription ended).
func (s *session) closeLocked() {
	if s.dead {
		return
	}
	s.flushLocked(true)
	s.timer.Stop()
	s.dead = true
	close(s.deadCh)
}

// shut closes the channel of a session closeLocked has closed, once the
// settlements it sent last have had settleGrace to reach the queue.
func (s *session) shut(closed <-chan *amqp.Error) {
	s.mu.Lock()
	wait := settleGrace - time.Since(s.lastSent)
	if s.lastSent.IsZero() {
		wait = 0
	}
	s.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-closed: //nolint:errcheck // why it closed is logged by the consumer
		}
		t.Stop()
	}
	_ = s.wire.Close()
}

// run is the session's lifecycle: it returns when the channel closes, or
// when asked to finish (flushing first). Retiring closes the channel once
// every handed-out delivery is settled.
func (s *session) run(closed <-chan *amqp.Error) {
	defer close(s.done)
	retire := s.retire
	for {
		select {
		case <-closed: //nolint:errcheck // why it closed is logged by the consumer
			s.mu.Lock()
			s.timer.Stop()
			if !s.dead {
				s.dead = true
				close(s.deadCh)
			}
			s.mu.Unlock()
			return
		case <-retire:
			retire = nil
			s.mu.Lock()
			s.ended = true
			s.retired = true
			s.afterLocked()
			s.mu.Unlock()
		case <-s.deadCh:
			// Closed by a settlement that ended a retired channel.
			s.shut(closed)
			return
		case <-s.finish:
			s.mu.Lock()
			s.closeLocked()
			s.mu.Unlock()
			s.shut(closed)
			return
		}
	}
}
