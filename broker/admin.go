package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueInfo is what the broker reports about a queue.
type QueueInfo struct {
	Name      string
	Messages  int // ready, not counting unacked
	Consumers int
}

// Inspect reports a queue's counts. A missing queue is an error that
// wraps ErrNotFound.
func (c *Conn) Inspect(ctx context.Context, queue string) (QueueInfo, error) {
	ch, _, err := c.channel(ctx)
	if err != nil {
		return QueueInfo{}, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return QueueInfo{}, notFound("queue", queue, err)
	}
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, nil
}

// Purge deletes every ready message of a queue and returns how many.
func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	ch, _, err := c.channel(ctx)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	n, err := ch.QueuePurge(queue, false)
	if err != nil {
		return 0, notFound("queue", queue, err)
	}
	return n, nil
}

// ErrNotFound is wrapped by errors about a queue or exchange that does
// not exist.
var ErrNotFound = errors.New("not found")

func notFound(kind, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return fmt.Errorf("%s %q: %w", kind, name, ErrNotFound)
	}
	return fmt.Errorf("%s %q: %w", kind, name, err)
}

// Reader takes messages from queues one at a time (basic.get) on its own
// channel. Nothing it takes is lost: what it does not Ack goes back to
// its queue when the Reader closes.
type Reader struct {
	ch *amqp.Channel
}

// NewReader opens a Reader.
func (c *Conn) NewReader(ctx context.Context) (*Reader, error) {
	ch, _, err := c.channel(ctx)
	if err != nil {
		return nil, err
	}
	return &Reader{ch: ch}, nil
}

// Get takes the next message of queue, or returns ok=false when it is
// empty. The message stays unacked until Ack or Close.
func (r *Reader) Get(queue string) (d *Delivery, ok bool, err error) {
	m, ok, err := r.ch.Get(queue, false)
	if err != nil {
		return nil, false, notFound("queue", queue, err)
	}
	if !ok {
		return nil, false, nil
	}
	return &Delivery{Message: messageOf(&m), Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		Queue: queue, Redelivered: m.Redelivered, DeliveryTag: m.DeliveryTag}, true, nil
}

// Ack removes a message taken with Get from its queue.
func (r *Reader) Ack(d *Delivery) error { return r.ch.Ack(d.DeliveryTag, false) }

// Close returns every message taken and not acked to its queue.
func (r *Reader) Close() error { return r.ch.Close() }

// Drift is one difference between a topology and the broker.
type Drift struct {
	Kind   string // exchange, queue or binding
	Name   string
	State  string // "ok", "missing", "differs", or "declared on apply" for bindings
	Detail string
}

// Plan compares t with the broker without changing anything that exists:
// missing entities are reported, existing ones are declared again with
// the same settings (a no-op when they match) to find differences.
// Bindings cannot be read over AMQP; they are listed as declared on apply.
func (c *Conn) Plan(ctx context.Context, t Topology) ([]Drift, error) {
	live, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	var out []Drift
	for _, e := range t.Exchanges {
		out = append(out, planOne(live.conn, "exchange", e.Name, func(ch *amqp.Channel) error {
			return ch.ExchangeDeclarePassive(e.Name, e.kind(), !e.Transient, e.AutoDelete, e.Internal, false, nil)
		}, func() error { return declareOn(live.conn, Topology{Exchanges: []Exchange{e}}) }))
	}
	for _, q := range t.Queues {
		out = append(out, planOne(live.conn, "queue", q.Name, func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, nil)
			return err
		}, func() error { return declareOn(live.conn, Topology{Queues: []Queue{q}}) }))
	}
	for _, b := range t.Bindings {
		out = append(out, Drift{Kind: "binding", Name: fmt.Sprintf("%s -> %s (%s)", b.Exchange, b.Queue, b.RoutingKey), State: "declared on apply"})
	}
	return out, nil
}

func planOne(conn *amqp.Connection, kind, name string, passive func(*amqp.Channel) error, declare func() error) Drift {
	d := Drift{Kind: kind, Name: name, State: "ok"}
	ch, err := conn.Channel()
	if err != nil {
		d.State, d.Detail = "unknown", err.Error()
		return d
	}
	err = passive(ch)
	_ = ch.Close()
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		d.State = "missing"
		return d
	}
	if err != nil {
		d.State, d.Detail = "unknown", err.Error()
		return d
	}
	var drift *DriftError
	if err := declare(); errors.As(err, &drift) {
		d.State, d.Detail = "differs", drift.Error()
	} else if err != nil {
		d.State, d.Detail = "unknown", err.Error()
	}
	return d
}

func (e Exchange) kind() string {
	if e.Kind == "" {
		return Topic
	}
	return e.Kind
}
