package broker

import (
	"errors"
	"fmt"
	"regexp"

	amqp "github.com/rabbitmq/amqp091-go"
)

// QueueType is the kind of a queue on the broker.
type QueueType string

// Queue types.
const (
	Classic QueueType = "classic"
	Quorum  QueueType = "quorum"
)

// Exchange kinds.
const (
	Topic   = "topic"
	Direct  = "direct"
	Fanout  = "fanout"
	Headers = "headers"
)

// Exchange describes an exchange to declare.
type Exchange struct {
	// Name of the exchange. Required; the default exchange "" is never declared.
	Name string
	// Kind is topic, direct, fanout or headers. "" means topic.
	Kind string
	// Transient makes the exchange non-durable. false (the default) means durable.
	Transient bool
	// AutoDelete deletes the exchange when its last binding goes.
	AutoDelete bool
	// Internal exchanges accept no publishes from clients.
	Internal bool
	// Args are extra declare arguments.
	Args map[string]any
}

// Queue describes a queue to declare.
type Queue struct {
	// Name of the queue. Required.
	Name string
	// Type is classic or quorum. "" means classic. Quorum queues are
	// always durable.
	Type QueueType
	// Transient makes the queue non-durable. false (the default) means durable.
	Transient bool
	// AutoDelete deletes the queue when its last consumer goes.
	AutoDelete bool
	// Exclusive queues belong to the declaring connection.
	Exclusive bool
	// Args are declare arguments such as x-message-ttl; x-queue-type is
	// set from Type.
	Args map[string]any
	// CreateArgs are declare arguments given only when the queue does
	// not exist yet: a queue that exists is used as it is, whatever they
	// say, so that adding one does not make an existing queue differ.
	CreateArgs map[string]any
}

// Binding binds a queue to an exchange with a routing key.
type Binding struct {
	Exchange   string
	Queue      string
	RoutingKey string
	Args       map[string]any
}

// Topology is a set of exchanges, queues and bindings, declared in that order.
type Topology struct {
	Exchanges []Exchange
	Queues    []Queue
	Bindings  []Binding
}

// Merge returns t with the entities of o appended.
func (t Topology) Merge(o Topology) Topology {
	return Topology{
		Exchanges: append(append([]Exchange(nil), t.Exchanges...), o.Exchanges...),
		Queues:    append(append([]Queue(nil), t.Queues...), o.Queues...),
		Bindings:  append(append([]Binding(nil), t.Bindings...), o.Bindings...),
	}
}

// Validate reports the first entity that cannot be declared.
func (t Topology) Validate() error {
	for _, e := range t.Exchanges {
		if e.Name == "" {
			return errors.New("topology: exchange with an empty name")
		}
		switch e.Kind {
		case "", Topic, Direct, Fanout, Headers:
		default:
			return fmt.Errorf("topology: exchange %q: unknown kind %q", e.Name, e.Kind)
		}
	}
	for _, q := range t.Queues {
		if q.Name == "" {
			return errors.New("topology: queue with an empty name")
		}
		if q.Type != "" && q.Type != Classic && q.Type != Quorum {
			return fmt.Errorf("topology: queue %q: unknown type %q (want classic or quorum)", q.Name, q.Type)
		}
		if q.Type == Quorum && (q.Transient || q.Exclusive || q.AutoDelete) {
			return fmt.Errorf("topology: queue %q: quorum queues must be durable, not exclusive, not auto-delete", q.Name)
		}
	}
	for _, b := range t.Bindings {
		if b.Queue == "" || b.Exchange == "" {
			return fmt.Errorf("topology: binding %q -> %q: exchange and queue are required", b.Exchange, b.Queue)
		}
	}
	return nil
}

func (q Queue) args() amqp.Table {
	args := amqp.Table{}
	for k, v := range q.Args {
		args[k] = v
	}
	if q.Type == Quorum {
		args["x-queue-type"] = string(Quorum)
	}
	return args
}

// queueExists asks the broker, on a channel of its own (a passive declare
// of a missing queue closes its channel), whether q exists.
func queueExists(conn *amqp.Connection, q Queue) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("opening a channel: %w", err)
	}
	defer ch.Close()
	_, err = ch.QueueDeclarePassive(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, nil)
	var ae *amqp.Error
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ae) && ae.Code == amqp.NotFound:
		return false, nil
	default:
		return false, err
	}
}

// declareOn declares t on a fresh channel of conn.
func declareOn(conn *amqp.Connection, t Topology) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("declaring topology: opening a channel: %w", err)
	}
	defer ch.Close()
	for _, e := range t.Exchanges {
		kind := e.Kind
		if kind == "" {
			kind = Topic
		}
		if err := ch.ExchangeDeclare(e.Name, kind, !e.Transient, e.AutoDelete, e.Internal, false, amqp.Table(e.Args)); err != nil {
			return declareErr("exchange", e.Name, err)
		}
	}
	for _, q := range t.Queues {
		args := q.args()
		if len(q.CreateArgs) > 0 {
			exists, err := queueExists(conn, q)
			if err != nil {
				return declareErr("queue", q.Name, err)
			}
			if exists {
				continue
			}
			for k, v := range q.CreateArgs {
				args[k] = v
			}
		}
		if _, err := ch.QueueDeclare(q.Name, !q.Transient, q.AutoDelete, q.Exclusive, false, args); err != nil {
			return declareErr("queue", q.Name, err)
		}
	}
	for _, b := range t.Bindings {
		if err := ch.QueueBind(b.Queue, b.RoutingKey, b.Exchange, false, amqp.Table(b.Args)); err != nil {
			return fmt.Errorf("binding queue %q to exchange %q with key %q: %w", b.Queue, b.Exchange, b.RoutingKey, err)
		}
	}
	return nil
}

// DriftError reports an entity that exists on the broker with settings
// other than the ones declared.
type DriftError struct {
	Kind     string // "queue" or "exchange"
	Name     string
	Argument string // the differing argument or property, when the broker names it
	Detail   string // the broker's own words
	Err      error
}

func (e *DriftError) Error() string {
	if e.Argument != "" {
		return fmt.Sprintf("%s %q exists with a different %q than declared (%s); delete it or change the declaration", e.Kind, e.Name, e.Argument, e.Detail)
	}
	return fmt.Sprintf("%s %q exists with different settings than declared (%s); delete it or change the declaration", e.Kind, e.Name, e.Detail)
}

func (e *DriftError) Unwrap() error { return e.Err }

var (
	argRe   = regexp.MustCompile(`inequivalent arg '([^']+)'`)
	fieldRe = regexp.MustCompile(`parameters for (?:queue|exchange) '[^']*'.*: '?(\w+)'? `)
)

func declareErr(kind, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		d := &DriftError{Kind: kind, Name: name, Detail: ae.Reason, Err: err}
		if m := argRe.FindStringSubmatch(ae.Reason); m != nil {
			d.Argument = m[1]
		} else if m := fieldRe.FindStringSubmatch(ae.Reason); m != nil {
			d.Argument = m[1]
		}
		return d
	}
	return fmt.Errorf("declaring %s %q: %w", kind, name, err)
}
