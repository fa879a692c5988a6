package broker

import (
	"crypto/rand"
	"errors"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Message is a message body with its AMQP properties.
type Message struct {
	Body    []byte
	Headers map[string]any

	ContentType     string
	ContentEncoding string
	// MessageID identifies the message. The publisher generates one when
	// it is empty.
	MessageID     string
	CorrelationID string
	ReplyTo       string
	Type          string
	AppID         string
	UserID        string
	Timestamp     time.Time
	Priority      uint8
	// Expiration is a per-message TTL in milliseconds, as a string. Empty
	// means none.
	Expiration string
	// Transient messages are not written to disk. false (the default)
	// means persistent.
	Transient bool
}

// NewMessageID returns a random message id (26 characters of base32).
func NewMessageID() string { return rand.Text() }

func (m *Message) publishing() amqp.Publishing {
	mode := amqp.Persistent
	if m.Transient {
		mode = amqp.Transient
	}
	return amqp.Publishing{
		Headers:         amqp.Table(m.Headers),
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    mode,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationID,
		ReplyTo:         m.ReplyTo,
		Expiration:      m.Expiration,
		MessageId:       m.MessageID,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		UserId:          m.UserID,
		AppId:           m.AppID,
		Body:            m.Body,
	}
}

func messageOf(d *amqp.Delivery) Message {
	return Message{
		Body:            d.Body,
		Headers:         d.Headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		MessageID:       d.MessageId,
		CorrelationID:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		Type:            d.Type,
		AppID:           d.AppId,
		UserID:          d.UserId,
		Timestamp:       d.Timestamp,
		Priority:        d.Priority,
		Expiration:      d.Expiration,
		Transient:       d.DeliveryMode == amqp.Transient,
	}
}

// Delivery is a message delivered to a Consumer. Settle it exactly once
// with Ack, AckNow or Nack; a result for a delivery whose channel has
// closed since is dropped with ErrStale, and the broker redelivers it.
type Delivery struct {
	Message
	Exchange    string
	RoutingKey  string
	Queue       string
	Redelivered bool
	// DeliveryCount is the broker's x-delivery-count (quorum queues): how
	// many times it was delivered before. 0 when unknown.
	DeliveryCount int64

	// Acknowledger settles the delivery on the channel that delivered it;
	// DeliveryTag names it there. A Consumer sets both. Tests of code
	// that settles deliveries may set a fake Acknowledger.
	Acknowledger Acknowledger
	DeliveryTag  uint64
}

// Acknowledger settles deliveries on the channel that delivered them, the
// seam between a delivery and the wire (as amqp091-go's Acknowledger is).
// Each method is called at most once per tag.
type Acknowledger interface {
	// Ack records tag as done; the ack may wait briefly to share a
	// multiple-ack with others, but only ever covers finished deliveries.
	Ack(tag uint64) error
	// AckNow acks tag at once, without waiting for others.
	AckNow(tag uint64) error
	// Nack returns tag to its queue (requeue) or dead-letters it through
	// the queue's dead-letter exchange.
	Nack(tag uint64, requeue bool) error
	// Closed reports whether the channel has closed, so that a result
	// would be dropped with ErrStale.
	Closed() bool
}

// Tag is the delivery tag on its channel.
func (d *Delivery) Tag() uint64 { return d.DeliveryTag }

// Ack acknowledges the delivery. Acks may be coalesced with others on the
// same channel, but only ever cover finished deliveries.
func (d *Delivery) Ack() error {
	if d.Acknowledger == nil {
		return errNoSession
	}
	return d.Acknowledger.Ack(d.DeliveryTag)
}

// AckNow acknowledges the delivery at once, without waiting to share a
// multiple-ack with others: for a message whose copy was just published
// (a retry, a dead letter), so that the original and its copy coexist
// for as short a time as possible.
func (d *Delivery) AckNow() error {
	if d.Acknowledger == nil {
		return errNoSession
	}
	return d.Acknowledger.AckNow(d.DeliveryTag)
}

// Nack returns the delivery to its queue (requeue) or dead-letters it
// through the queue's dead-letter exchange.
func (d *Delivery) Nack(requeue bool) error {
	if d.Acknowledger == nil {
		return errNoSession
	}
	return d.Acknowledger.Nack(d.DeliveryTag, requeue)
}

// Stale reports whether the channel that delivered d has closed, so that
// settling it would be dropped.
func (d *Delivery) Stale() bool { return d.Acknowledger == nil || d.Acknowledger.Closed() }

var errNoSession = errors.New("broker: delivery was not handed out by a Consumer (use Reader.Ack)")
