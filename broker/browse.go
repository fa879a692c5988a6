package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultBrowseIdle is how long a Browser waits for a message it expects
// before it decides that someone else took the rest of the queue.
const DefaultBrowseIdle = 5 * time.Second

// Browser reads the messages a queue holds when it opens, each once,
// without taking them: a message stays unacked until Ack removes it, and
// every message not acked goes back to its queue when the Browser closes.
//
// It reads with consumers rather than one basic.get per message, and
// bounds the messages waiting in memory: each consumer's prefetch is the
// window, and a new channel is opened only when every open one holds a
// full window of read messages. Memory is about a window of messages,
// not the queue.
type Browser struct {
	conn   *amqp.Connection
	queue  string
	window int  // the most a channel's window is
	fixed  bool // the caller chose the window: every channel has it
	least  int  // the least a chosen window is: keeps the channels few
	idle   time.Duration
	total  int // ready messages when the Browser opened
	others int // consumers of the queue when the Browser opened
	read   int
	bodies int64 // bytes of the bodies read
	chans  []*browseChan
}

type browseChan struct {
	ch     *amqp.Channel
	tag    string // its consumer's
	in     <-chan amqp.Delivery
	window int
	held   int  // read and neither acked nor returned
	acked  bool // an ack went out on it (see Close)
}

// browseBytes is about how many bytes of message bodies a Browser with a
// window of its own choosing lets wait in memory: a channel's window is
// cut to it from the mean body size read so far.
var browseBytes int64 = 64 << 20

// browseProbe is the window of the first channel of such a Browser,
// before it knows how large the messages are.
const browseProbe = 32

var browseSeq atomic.Uint64

// Browse opens a Browser on queue with a window of prefetch per channel.
// window <= 0 picks each channel's window: about 64 MiB of bodies at the
// mean size read so far, at most 2000 messages, and never so few that
// the channels would number over about two hundred (the first channel,
// before any message is read, has a window of 32). A missing queue is an
// error that wraps ErrNotFound.
func (c *Conn) Browse(ctx context.Context, queue string, window int) (*Browser, error) {
	live, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := live.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("opening a channel: %w", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	_ = ch.Close()
	if err != nil {
		return nil, notFound("queue", queue, err)
	}
	b := &Browser{conn: live.conn, queue: queue, window: window, fixed: window > 0, idle: DefaultBrowseIdle, total: q.Messages, others: q.Consumers}
	if !b.fixed {
		b.least = q.Messages/200 + 1
		b.window = max(2000, b.least)
	}
	return b, nil
}

// nextWindow is the window of the next channel to open.
func (b *Browser) nextWindow() int {
	switch {
	case b.fixed:
		return b.window
	case b.read == 0:
		return max(min(browseProbe, b.window), b.least)
	}
	mean := max(b.bodies/int64(b.read), 1)
	return int(max(min(browseBytes/mean, int64(b.window)), int64(b.least), 1))
}

// Others is the number of consumers the queue had when the Browser
// opened: messages they held unacked were neither counted nor read.
func (b *Browser) Others() int { return b.others }

// Total is the number of ready messages the queue held when the Browser
// opened: the most Next returns.
func (b *Browser) Total() int { return b.total }

// Read is the number of messages Next returned so far.
func (b *Browser) Read() int { return b.read }

// Next returns the next message, or ok=false once Total messages were
// read or none came for the idle wait (another client took them).
func (b *Browser) Next(ctx context.Context) (d *Delivery, ok bool, err error) {
	if b.read >= b.total {
		return nil, false, nil
	}
	if err := b.room(); err != nil {
		return nil, false, err
	}
	if d, ok := b.poll(); ok {
		return d, true, nil
	}
	cases := make([]reflect.SelectCase, 0, len(b.chans)+2)
	for _, c := range b.chans {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.in)})
	}
	idle := time.NewTimer(b.idle)
	defer idle.Stop()
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(idle.C)})
	i, v, recvOK := reflect.Select(cases)
	switch {
	case i == len(b.chans):
		return nil, false, ctx.Err()
	case i == len(b.chans)+1:
		return nil, false, nil
	case !recvOK:
		return nil, false, fmt.Errorf("browsing %q: the channel closed", b.queue)
	}
	m := v.Interface().(amqp.Delivery)
	return b.took(b.chans[i], &m), true, nil
}

// poll takes a message already waiting on the newest channel, where a
// scan's messages mostly arrive, without a select over every channel.
func (b *Browser) poll() (*Delivery, bool) {
	c := b.chans[len(b.chans)-1]
	select {
	case m, ok := <-c.in:
		if ok {
			return b.took(c, &m), true
		}
	default:
	}
	return nil, false
}

func (b *Browser) took(c *browseChan, m *amqp.Delivery) *Delivery {
	c.held++
	b.read++
	b.bodies += int64(len(m.Body))
	return &Delivery{Message: messageOf(m), Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		Queue: b.queue, Redelivered: m.Redelivered, DeliveryTag: m.DeliveryTag, Acknowledger: c}
}

// A browseChan settles the messages read on it: Delivery.Ack and
// Browser.Ack both remove a message from the queue at once.
func (c *browseChan) Ack(tag uint64) error { return c.AckNow(tag) }
func (c *browseChan) Nack(tag uint64, requeue bool) error {
	if err := c.ch.Nack(tag, false, requeue); err != nil {
		return err
	}
	c.held--
	return nil
}
func (c *browseChan) Closed() bool { return c.ch.IsClosed() }

func (c *browseChan) AckNow(tag uint64) error {
	if err := c.ch.Ack(tag, false); err != nil {
		return err
	}
	c.held--
	c.acked = true
	return nil
}

// room opens a channel when every open one holds a full window.
func (b *Browser) room() error {
	for _, c := range b.chans {
		if c.held < c.window {
			return nil
		}
	}
	window := b.nextWindow()
	ch, err := b.conn.Channel()
	if err != nil {
		return fmt.Errorf("browsing %q: opening a channel: %w", b.queue, err)
	}
	if err := ch.Qos(window, 0, false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("browsing %q: %w", b.queue, err)
	}
	tag := fmt.Sprintf("warren-browse-%d-%d", os.Getpid(), browseSeq.Add(1))
	in, err := ch.Consume(b.queue, tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return notFound("queue", b.queue, err)
	}
	b.chans = append(b.chans, &browseChan{ch: ch, tag: tag, in: in, window: window})
	return nil
}

// Ack removes a message read by Next from the queue.
func (b *Browser) Ack(d *Delivery) error {
	for _, c := range b.chans {
		if d.Acknowledger == Acknowledger(c) {
			return c.AckNow(d.DeliveryTag)
		}
	}
	return errors.New("broker: Browser.Ack of a message this Browser did not read")
}

// Close returns every message read and not acked to the queue.
//
// Each consumer that acked is cancelled before its channel closes: a
// quorum queue's broker-side client holds back settlements beyond 32
// commands in flight and drops them when the channel closes, so a burst
// of acks right before the close (a replay's last batch) would leave
// acked messages in the queue. The cancel sends what it held back and
// returns once the queue has applied it.
func (b *Browser) Close() error {
	var errs []error
	for _, c := range b.chans {
		if c.acked {
			if err := c.ch.Cancel(c.tag, false); err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
		if err := c.ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			errs = append(errs, err)
		}
	}
	b.chans = nil
	return errors.Join(errs...)
}

// Queue is the queue the Browser reads.
func (b *Browser) Queue() string { return b.queue }
