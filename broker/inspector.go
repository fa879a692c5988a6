package broker

import (
	"context"
	"errors"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Inspector reads queue counts with passive declares on a channel of its
// own, opened on first use and opened again after the broker closed it
// (a passive declare of a missing queue closes the channel) or the
// connection was lost. Unlike Conn.Inspect it does not open a channel
// per call, so it suits a poller. It is safe for concurrent use.
type Inspector struct {
	conn *Conn
	mu   sync.Mutex
	ch   *amqp.Channel
}

// NewInspector returns an inspector on c. Close releases its channel.
func (c *Conn) NewInspector() *Inspector { return &Inspector{conn: c} }

// Inspect reports a queue's ready messages and consumers. A missing queue
// is an error that wraps ErrNotFound.
func (i *Inspector) Inspect(ctx context.Context, queue string) (QueueInfo, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ch == nil || i.ch.IsClosed() {
		ch, _, err := i.conn.channel(ctx)
		if err != nil {
			return QueueInfo{}, err
		}
		i.ch = ch
	}
	q, err := i.ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return QueueInfo{}, notFound("queue", queue, err)
	}
	return QueueInfo{Name: q.Name, Messages: q.Messages, Consumers: q.Consumers}, nil
}

// Close closes the inspector's channel.
func (i *Inspector) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ch == nil {
		return nil
	}
	err := i.ch.Close()
	i.ch = nil
	if err != nil && !errors.Is(err, amqp.ErrClosed) {
		return err
	}
	return nil
}
