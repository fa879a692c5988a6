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
	settleAck settleKind = iota + 1
	settleRequeue
	settleReject
	settleSent // internal: already settled on the wire
)

// ackHold bounds how long a finished delivery's ack may wait behind an
// unfinished one before it is sent on its own.
const ackHold = 20 * time.Millisecond

type settleReq struct {
	tag  uint64
	kind settleKind
}

// session is one consumer channel and its settler. The settler owns all
// acks on the channel: it coalesces acks of the contiguous finished prefix
// of delivery tags into one multiple-ack, sends nacks at once, and never
// covers an unfinished delivery with a multiple-ack.
type session struct {
	ch   *amqp.Channel // for basic.cancel; nil in unit tests
	wire ackWire
	log  *zap.Logger
	in   chan settleReq
	dead chan struct{} // closed when the channel is gone
	once sync.Once

	delivered atomic.Uint64 // highest tag handed out
	retire    chan struct{} // close the channel once everything is settled
	finish    chan struct{} // flush and close the channel now
	ended     chan struct{} // the settler has returned

	// settler state, owned by the settler goroutine
	base    uint64 // every tag <= base is settled on the wire
	pending map[uint64]settleKind
	held    int // pending acks waiting behind a gap
}

// ackWire is the part of a channel the settler writes to.
type ackWire interface {
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	Close() error
}

func newSession(ch *amqp.Channel, wire ackWire, log *zap.Logger, buffer int) *session {
	return &session{
		ch: ch, wire: wire, log: log,
		in:      make(chan settleReq, buffer),
		dead:    make(chan struct{}),
		retire:  make(chan struct{}),
		finish:  make(chan struct{}),
		ended:   make(chan struct{}),
		pending: map[uint64]settleKind{},
	}
}

func (s *session) isDead() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

func (s *session) markDead() { s.once.Do(func() { close(s.dead) }) }

// settle queues a result for tag. It never blocks for long: the buffer
// holds one entry per possible unsettled delivery.
func (s *session) settle(tag uint64, kind settleKind) error {
	select {
	case <-s.dead:
		return ErrStale
	default:
	}
	select {
	case s.in <- settleReq{tag, kind}:
		return nil
	case <-s.dead:
		return ErrStale
	}
}

// run is the settler loop. It returns when the channel closes, or when
// asked to finish (flushing first).
func (s *session) run(closed <-chan *amqp.Error) {
	defer close(s.ended)
	defer s.markDead()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	retire := s.retire
	for {
		select {
		case r := <-s.in:
			s.apply(r)
			s.drain()
			if s.flush(false) {
				timer.Reset(ackHold)
			}
		case <-timer.C:
			s.flush(true)
		case <-closed:
			return
		case <-retire:
			retire = nil
		case <-s.finish:
			s.drain()
			s.flush(true)
			_ = s.wire.Close()
			return
		}
		if retire == nil && s.allSettled() {
			_ = s.wire.Close()
			return
		}
	}
}

func (s *session) drain() {
	for {
		select {
		case r := <-s.in:
			s.apply(r)
		default:
			return
		}
	}
}

func (s *session) apply(r settleReq) {
	if r.tag <= s.base {
		return
	}
	if r.kind == settleAck {
		s.pending[r.tag] = settleAck
		return
	}
	if err := s.wire.Nack(r.tag, false, r.kind == settleRequeue); err != nil {
		s.log.Debug("nack not sent", zap.Error(err))
	}
	s.pending[r.tag] = settleSent
}

// flush acks the finished prefix with one multiple-ack. With force, or
// when too many acks wait behind a gap, those are sent one by one. It
// reports whether acks are still held.
func (s *session) flush(force bool) bool {
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
		}
	}
	if last > 0 {
		if err := s.wire.Ack(last, true); err != nil {
			s.log.Debug("ack not sent", zap.Error(err))
		}
	}
	s.held = 0
	for _, kind := range s.pending {
		if kind == settleAck {
			s.held++
		}
	}
	if s.held == 0 {
		return false
	}
	if force || s.held >= cap(s.in)/4 {
		for tag, kind := range s.pending {
			if kind == settleAck {
				if err := s.wire.Ack(tag, false); err != nil {
					s.log.Debug("ack not sent", zap.Error(err))
				}
				s.pending[tag] = settleSent
			}
		}
		s.held = 0
		return false
	}
	return true
}

func (s *session) allSettled() bool {
	return s.base >= s.delivered.Load()
}
