package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

// replayBatch is how many copies a replay publishes before it waits for
// their confirms.
const replayBatch = 128

// replayBatchTimeout bounds how long a batch of copies on the wire may
// still take once the replay's context has ended: it runs to its
// confirms and acks, so that an interrupt does not leave copies confirmed
// and their letters still in the DLQ (replayed twice by the next replay).
const replayBatchTimeout = 30 * time.Second

// ReplayOptions say what Replay moves and where.
type ReplayOptions struct {
	// Queue is the queue whose dead letters are replayed, or its DLQ.
	Queue string
	// Match selects letters; nil selects all.
	Match func(*Letter) bool
	// Limit stops after this many letters were replayed; 0 means none.
	Limit int
	// DryRun changes nothing; it reports what would be replayed.
	DryRun bool
	// OriginalRoute publishes each copy to its original exchange and
	// routing key (reaching every queue bound there) instead of the
	// queue alone through the default exchange. A letter without an
	// original exchange goes to the queue.
	OriginalRoute bool
	// OnLetter, when set, is called for each letter replayed (or that
	// would be, in a dry run), after its copy was confirmed.
	OnLetter func(l *Letter, exchange, key string)
	// Progress, when set, is called after every batch.
	Progress func(ReplayResult)
	// TracerProvider, when set, traces each batch of copies: a span
	// "replay <dlq>" that starts a trace of its own, linked to the trace
	// each dead letter carries (its message's, across its attempts), under
	// which the copies are published, so that the replayed runs continue
	// the replay's trace. nil means no tracing.
	TracerProvider trace.TracerProvider
}

// ReplayResult counts what a replay did.
type ReplayResult struct {
	DLQ      string
	Total    int // letters in the DLQ when the replay began
	Seen     int // letters read
	Replayed int // letters replayed (or that would be, in a dry run)
	Skipped  int // letters read that Match did not select
	// Refused counts letters whose copy the broker refused (unroutable,
	// nacked, too large): they stay in the DLQ and the replay goes on.
	Refused int
	// NotRemoved counts letters whose copy was confirmed but that could
	// not be acked (the channel was lost): they are replayed and also
	// back in the DLQ, so that replaying them again runs them twice.
	NotRemoved int
}

// Replay moves dead letters back: each selected letter's copy (same body,
// properties and message id, without FailureHeaders) is published with a
// confirm, and only then is the letter acked. Letters it does not select
// stay where they were. A letter whose copy the broker refuses stays too,
// and the replay goes on; it then ends with an error naming the first
// such letter. Any other failure stops the replay once the letters of the
// batch on the wire whose copies were confirmed are acked; every letter
// not acked stays. The result counts each kind (see ReplayResult).
func Replay(ctx context.Context, conn *broker.Conn, pub *broker.Publisher, o ReplayOptions) (ReplayResult, error) {
	dlq := Name(o.Queue)
	res := ReplayResult{DLQ: dlq}
	b, err := conn.Browse(ctx, dlq, 0)
	if err != nil {
		return res, fmt.Errorf("replaying from %s: %w", dlq, err)
	}
	defer b.Close()
	res.Total = b.Total()
	user := conn.User()
	var batch []*Letter
	var refused error // the first refusal
	exhausted := false
	for o.Limit == 0 || res.Replayed+len(batch) < o.Limit {
		if err := ctx.Err(); err != nil {
			// Next sees ctx only when nothing is buffered; the letters of
			// the batch not yet sent go back with Close.
			return res, fmt.Errorf("replaying from %s: %w", dlq, err)
		}
		d, ok, err := b.Next(ctx)
		if err != nil {
			return res, fmt.Errorf("replaying from %s: %w", dlq, err)
		}
		if !ok {
			exhausted = true
			break
		}
		res.Seen++
		l := Read(d, dlq)
		if o.Match != nil && !o.Match(l) {
			res.Skipped++
			continue
		}
		if batch = append(batch, l); len(batch) == replayBatch {
			if err := o.flush(ctx, b, pub, user, batch, &res, &refused); err != nil {
				return res, err
			}
			batch = batch[:0]
		}
	}
	if err := o.flush(ctx, b, pub, user, batch, &res, &refused); err != nil {
		return res, err
	}
	var errs []error
	if refused != nil {
		errs = append(errs, fmt.Errorf("%d of the letters selected could not be replayed and stay in %s; the first: %w", res.Refused, dlq, refused))
	}
	switch {
	case exhausted && res.Seen < res.Total:
		errs = append(errs, fmt.Errorf("%s held %d ready letters when the replay began and %d of them could be read: another reader took the others or holds them unacked (a scan, a replay, a consumer); nothing was lost, replay again once it is done", dlq, res.Total, res.Seen))
	case exhausted && b.Others() > 0:
		errs = append(errs, fmt.Errorf("%s had %d other reader(s) when the replay began (a scan, a replay, a consumer): letters they held unacked were not replayed; nothing was lost, replay again once they are done", dlq, b.Others()))
	}
	return res, errors.Join(errs...)
}

// flush publishes a batch of copies as user, then acks each letter whose
// copy was confirmed. A letter whose copy was refused is counted, the
// first refusal kept in refused; any other failure is returned once the
// batch is through.
func (o ReplayOptions) flush(ctx context.Context, b *broker.Browser, pub *broker.Publisher, user string, batch []*Letter, res *ReplayResult, refused *error) error {
	if len(batch) == 0 {
		return nil
	}
	out := make([]broker.Outgoing, len(batch))
	for i, l := range batch {
		out[i].Exchange, out[i].RoutingKey = o.target(l)
		out[i].Message = Fresh(l.Delivery)
		worker.MoveUserID(&out[i].Message, out[i].Message.Headers, user)
	}
	var errs []error
	if !o.DryRun {
		// Once ctx ends, the batch has replayBatchTimeout more; until
		// then it waits as long as its confirms take.
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, func() { time.AfterFunc(replayBatchTimeout, cancel) })
		errs = o.publish(pctx, pub, batch, out, res.DLQ)
		stop()
		cancel()
	}
	var stop error
	for i, l := range batch {
		if errs != nil && errs[i] != nil {
			err := fmt.Errorf("replaying %s (it stays in %s): %w", l.MessageID, res.DLQ, errs[i])
			switch {
			case isRefusal(errs[i]):
				res.Refused++
				if *refused == nil {
					*refused = err
				}
			case stop == nil:
				stop = err
			}
			continue
		}
		if !o.DryRun {
			if err := b.Ack(l.Delivery); err != nil {
				res.NotRemoved++
				if stop == nil {
					stop = fmt.Errorf("removing %s from %s after its replay (its copy is published; it is back in %s and a replay would run it twice): %w", l.MessageID, res.DLQ, res.DLQ, err)
				}
				continue
			}
		}
		res.Replayed++
		if o.OnLetter != nil {
			o.OnLetter(l, out[i].Exchange, out[i].RoutingKey)
		}
	}
	if o.Progress != nil {
		o.Progress(*res)
	}
	return stop
}

// isRefusal reports whether a copy's publish failed because the broker
// refused that message, which another try would not change, rather than
// for the connection or the replay's end.
func isRefusal(err error) bool {
	var (
		ue *broker.UnroutableError
		tl *broker.MessageTooLargeError
	)
	return errors.As(err, &ue) || errors.As(err, &tl) || errors.Is(err, broker.ErrNacked)
}

// publish publishes a batch of copies, under a replay span with tracing
// on (a root of its own, linked to each letter's trace: a child of one
// dead letter's trace would mislead about the others').
func (o ReplayOptions) publish(ctx context.Context, pub *broker.Publisher, batch []*Letter, out []broker.Outgoing, dlq string) []error {
	if o.TracerProvider == nil {
		return pub.PublishBatch(ctx, out, broker.KeepMessageID())
	}
	var links []trace.Link
	for _, l := range batch {
		if sc := broker.SpanContextOf(l.Headers); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("warren.link", "dead_letter")}})
		}
	}
	ctx, span := o.TracerProvider.Tracer(broker.TracerName).Start(ctx, "replay "+dlq, trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithLinks(links...),
		trace.WithAttributes(broker.AttrOperationName.String("replay"), attribute.String("warren.dlq", dlq),
			attribute.Int("messaging.batch.message_count", len(out))))
	errs := pub.PublishBatch(ctx, out, broker.KeepMessageID())
	broker.EndSpan(span, errors.Join(errs...))
	return errs
}

// target is where a letter's copy goes.
func (o ReplayOptions) target(l *Letter) (exchange, key string) {
	ex, okEx := l.Headers[worker.HeaderOriginalExchange].(string)
	k, okKey := l.Headers[worker.HeaderOriginalKey].(string)
	if !o.OriginalRoute || !okEx || !okKey || ex == "" {
		return "", QueueOf(Name(o.Queue))
	}
	return ex, k
}

// Fresh is the dead letter as a new message: the same body, properties
// and id, without the failure and attempt headers, and without the
// headers the broker set when it dead-lettered the message (x-death and
// the like), which would otherwise pile up on each round.
func Fresh(d *broker.Delivery) broker.Message {
	m := d.Message
	h := make(map[string]any, len(m.Headers))
	for k, v := range m.Headers {
		if !IsFailureHeader(k) && !worker.IsBrokerHeader(k) {
			h[k] = v
		}
	}
	m.Headers = h
	return m
}

// Selection is a set of letters chosen by ID, each counted as often as
// it was chosen.
type Selection map[ID]int

// Match selects a letter whose ID is still wanted, once per choice.
func (s Selection) Match(l *Letter) bool {
	if s[l.ID] == 0 {
		return false
	}
	s[l.ID]--
	return true
}

// Len is the number of letters chosen.
func (s Selection) Len() int {
	n := 0
	for _, c := range s {
		n += c
	}
	return n
}

// Describe says in a line where a replay puts letters.
func (o ReplayOptions) Describe() string {
	switch {
	case o.OriginalRoute:
		return "to their original exchange and routing key"
	case o.Queue == "":
		return "to their queue"
	}
	return "to " + QueueOf(Name(o.Queue))
}
