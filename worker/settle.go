package worker

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// settle carries out dec: it stores what replaces the message (a retry
// copy or a dead letter) and only then acks it. It returns the decision
// that was applied in the end, which differs from dec when a copy could
// not be stored.
func (r *runner) settle(hctx context.Context, bd *broker.Delivery, d *Delivery, dec decision) decision {
	var err error
	switch dec.outcome {
	case OutcomeRetry:
		err = r.publishCopy(hctx, retry.TierQueue(r.route.Queue, dec.delay), r.retryMessage(bd, d, dec))
	case OutcomeDeadLetter:
		err = r.publishCopy(hctx, retry.DLQ(r.route.Queue), r.deadLetter(bd, d, dec))
	}
	if err != nil {
		return r.copyFailed(hctx, bd, d, dec, err)
	}
	if dec.release != nil {
		dec.release()
	}
	switch dec.outcome {
	case OutcomeRequeue:
		dec.stale = errors.Is(bd.Nack(true), broker.ErrStale)
	case OutcomeRetry, OutcomeDeadLetter:
		// Its copy is stored: ack at once, so that a lost connection
		// leaves as few originals as possible to run again beside it.
		dec.stale = errors.Is(bd.AckNow(), broker.ErrStale)
	default:
		dec.stale = errors.Is(bd.Ack(), broker.ErrStale)
	}
	return dec
}

func (r *runner) publishCopy(hctx context.Context, queue string, m broker.Message) error {
	ctx, cancel := context.WithTimeout(hctx, copyTimeout)
	defer cancel()
	return r.pub.Publish(ctx, "", queue, m, broker.KeepMessageID())
}

// copyFailed handles a retry copy or dead letter that the broker did not
// confirm. The original is never acked then:
//   - its target queue is gone (unroutable): the topology is declared
//     again and the message requeued, to be tried again;
//   - the broker refused the copy itself (too large, say): a retry becomes
//     a dead letter, and a dead letter falls back to the broker's own
//     dead-lettering (a reject, which the queue routes to its .dlq);
//   - anything else (a lost connection, a timeout): it is requeued.
func (r *runner) copyFailed(hctx context.Context, bd *broker.Delivery, d *Delivery, dec decision, err error) decision {
	r.log.Warn("storing the message's copy failed", append(messageFields(d), zap.String("copy", string(dec.outcome)), zap.Error(err))...)
	var (
		ce *broker.ChannelError
		ue *broker.UnroutableError
	)
	if errors.As(err, &ce) && dec.outcome == OutcomeRetry {
		// The broker refused the copy itself: keep it as a dead letter.
		dl := decision{outcome: OutcomeDeadLetter, kind: dec.kind, reason: KindUnpublished, err: errors.Join(dec.err, err), release: dec.release}
		return r.settle(hctx, bd, d, dl)
	}
	if dec.release != nil {
		defer dec.release()
	}
	switch {
	case errors.As(err, &ue):
		if derr := r.conn.Redeclare(hctx); derr != nil {
			r.log.Warn("declaring the topology again failed", zap.Error(derr))
		}
	case errors.As(err, &ce):
		dec.reason, dec.err = KindUnpublished, errors.Join(dec.err, err)
		dec.stale = errors.Is(bd.Nack(false), broker.ErrStale)
		return dec
	}
	dec.outcome, dec.err = OutcomeRequeue, errors.Join(dec.err, err)
	dec.stale = errors.Is(bd.Nack(true), broker.ErrStale)
	return dec
}
