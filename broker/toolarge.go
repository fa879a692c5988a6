package broker

import (
	"fmt"
	"regexp"
	"strconv"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// MessageTooLargeError is returned when the broker refused a message for
// its size: the body is larger than the broker's max_message_size
// (16 MiB by default since RabbitMQ 4.0, 128 MiB in 3.x). Publishing the
// same message again fails again. It unwraps to the *ChannelError the
// broker closed the channel with.
type MessageTooLargeError struct {
	MessageID string
	Exchange  string
	// RoutingKey the message was published with.
	RoutingKey string
	// Size is the body's size in bytes; Limit the broker's limit.
	Size, Limit int64
	Err         *ChannelError
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("message %q to exchange %q with routing key %q is too large for the broker: body of %d bytes, the broker's max_message_size is %d bytes",
		e.MessageID, e.Exchange, e.RoutingKey, e.Size, e.Limit)
}

func (e *MessageTooLargeError) Unwrap() error { return e.Err }

// sizeRefusal matches the reason of RabbitMQ's channel exception for an
// oversized message (3.x and 4.x word it the same).
var sizeRefusal = regexp.MustCompile(`message size (\d+) is larger than configured max size (\d+)`)

// sizeLimitOf returns the size and limit named by a size refusal.
func sizeLimitOf(reason *amqp.Error) (size, limit int64, ok bool) {
	if reason == nil || reason.Code != amqp.PreconditionFailed {
		return 0, 0, false
	}
	m := sizeRefusal.FindStringSubmatch(reason.Reason)
	if m == nil {
		return 0, 0, false
	}
	size, err1 := strconv.ParseInt(m[1], 10, 64)
	limit, err2 := strconv.ParseInt(m[2], 10, 64)
	return size, limit, err1 == nil && err2 == nil
}

// sizeLimit remembers the broker's message size limit once the broker
// named it, for the connection it named it on, so that later publishes of
// larger bodies fail at once instead of closing the channel under every
// other publish in flight. A new connection forgets it: the broker may
// have been reconfigured.
type sizeLimit struct {
	mu     sync.Mutex
	limit  int64
	reason *amqp.Error
	gen    <-chan struct{} // closed when that connection ended
}

func (l *sizeLimit) learn(limit int64, reason *amqp.Error, gen <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit, l.reason, l.gen = limit, reason, gen
}

// check returns a *MessageTooLargeError when a body of size bytes is over
// the limit learnt on the current connection.
func (l *sizeLimit) check(size int64, id, exchange, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen == nil || size <= l.limit {
		return nil
	}
	select {
	case <-l.gen:
		l.limit, l.reason, l.gen = 0, nil, nil
		return nil
	default:
	}
	return &MessageTooLargeError{MessageID: id, Exchange: exchange, RoutingKey: key,
		Size: size, Limit: l.limit, Err: &ChannelError{Err: l.reason}}
}
