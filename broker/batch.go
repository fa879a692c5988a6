package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Outgoing is one message of PublishBatch.
type Outgoing struct {
	Exchange   string
	RoutingKey string
	Message    Message
}

// PublishBatch publishes every message of batch back to back on one
// channel, then waits for all their confirms: one caller keeps many
// messages in flight. errs[i] answers batch[i] exactly as Publish would;
// a message whose channel died before its confirm is published again.
// Empty message ids and timestamps in batch are filled in place; with
// tracing on, each message is a producer span of its own and its headers
// are replaced by a copy carrying that span's context.
func (p *Publisher) PublishBatch(ctx context.Context, batch []Outgoing, opts ...PublishOption) (errs []error) {
	errs = make([]error, len(batch))
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	pends := make([]*pending, len(batch))
	s, err := p.session(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	spans := make([]trace.Span, len(batch))
	defer func() {
		for i, span := range spans {
			EndSpan(span, errs[i])
		}
	}()
	for i := range batch {
		m := &batch[i].Message
		if !o.keepID {
			if m.MessageID == "" {
				m.MessageID = NewMessageID()
			}
			if m.Timestamp.IsZero() {
				m.Timestamp = time.Now()
			}
		}
		_, spans[i] = p.startPublish(ctx, batch[i].Exchange, batch[i].RoutingKey, m)
		if errs[i] = p.size.check(int64(len(m.Body)), m.MessageID, batch[i].Exchange, batch[i].RoutingKey); errs[i] != nil {
			continue
		}
		pub := m.publishing()
		pends[i], errs[i] = s.publish(ctx, batch[i].Exchange, batch[i].RoutingKey, &pub)
	}
	for i, pend := range pends {
		var tl *MessageTooLargeError
		if errors.As(errs[i], &tl) {
			continue
		}
		errs[i] = p.await(ctx, s, pend, errs[i], batch[i])
	}
	return errs
}

// await resolves one message of a batch, publishing it again on its own
// when its channel died first.
func (p *Publisher) await(ctx context.Context, s *pubSession, pend *pending, err error, out Outgoing) error {
	if pend == nil {
		if s.isDead() {
			return p.publish(ctx, out.Exchange, out.RoutingKey, out.Message)
		}
		return fmt.Errorf("publishing message %q: %w", out.Message.MessageID, err)
	}
	select {
	case <-pend.done:
		var (
			ce *ChannelError
			tl *MessageTooLargeError
		)
		if errors.As(pend.err, &tl) {
			return pend.err // the same body would be refused again
		}
		if pend.lost {
			return p.publish(ctx, out.Exchange, out.RoutingKey, out.Message)
		}
		if errors.As(pend.err, &ce) {
			// Failed with the whole channel: find out whose failure it is.
			pub := out.Message.publishing()
			return p.publishAlone(ctx, out.Exchange, out.RoutingKey, &pub, 0)
		}
		p.count(pend.err)
		return pend.err
	case <-ctx.Done():
		s.forget(pend.tag)
		return fmt.Errorf("waiting for the confirm of message %q: %w", out.Message.MessageID, ctx.Err())
	}
}
