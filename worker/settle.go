package worker

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// copyTimeout bounds publishing a retry copy or a dead letter.
const copyTimeout = 30 * time.Second

// copyStore is where settle stores a message's copy, the seam to the
// broker's confirmed publisher.
type copyStore interface {
	// PublishCopy publishes m to queue through the default exchange and
	// returns once the broker confirmed it: a *broker.UnroutableError
	// when the queue is missing, a *broker.ChannelError when the broker
	// refused the message itself.
	PublishCopy(ctx context.Context, queue string, m broker.Message) error
	// Redeclare declares the topology again.
	Redeclare(ctx context.Context) error
}

// brokerCopies is the copyStore of a running worker.
type brokerCopies struct {
	pub  *broker.Publisher
	conn *broker.Conn
}

func (b brokerCopies) PublishCopy(ctx context.Context, queue string, m broker.Message) error {
	return b.pub.Publish(ctx, "", queue, m, broker.KeepMessageID())
}

func (b brokerCopies) Redeclare(ctx context.Context) error { return b.conn.Redeclare(ctx) }

// settler is the third stage: it carries a verdict out. It stores what
// replaces the message (a retry copy or a dead letter) and only then
// releases the job's claim and acks the message.
type settler struct {
	queue  string
	copier copier
	copies copyStore
	claims *claims // nil when dedupe is off
	log    *zap.Logger
}

// settle carries res out for j. It returns what was done in the end,
// which differs from res when a copy could not be stored.
func (s *settler) settle(hctx context.Context, j *job, res result) result {
	var err error
	switch res.Outcome {
	case OutcomeRetry:
		err = s.publish(hctx, retry.TierQueue(s.queue, res.Delay), s.copier.retryMessage(j.bd, j.d, res))
	case OutcomeDeadLetter:
		err = s.publish(hctx, retry.DLQ(s.queue), s.copier.deadLetter(j.bd, j.d, res))
	}
	if err != nil {
		return s.copyFailed(hctx, j, res, err)
	}
	s.releaseHeld(hctx, j)
	switch res.Outcome {
	case OutcomeRequeue:
		j.stale = errors.Is(j.bd.Nack(true), broker.ErrStale)
	case OutcomeRetry, OutcomeDeadLetter:
		// Its copy is stored: ack at once, so that a lost connection
		// leaves as few originals as possible to run again beside it.
		j.stale = errors.Is(j.bd.AckNow(), broker.ErrStale)
	default:
		j.stale = errors.Is(j.bd.Ack(), broker.ErrStale)
	}
	return res
}

func (s *settler) publish(hctx context.Context, queue string, m broker.Message) error {
	ctx, cancel := context.WithTimeout(hctx, copyTimeout)
	defer cancel()
	return s.copies.PublishCopy(ctx, queue, m)
}

// releaseHeld gives up the claim the job still holds, once what replaces
// the message is stored (or the message is back on its queue).
func (s *settler) releaseHeld(hctx context.Context, j *job) {
	if !j.holds {
		return
	}
	j.holds = false
	rctx, cancel := releaseContext(hctx)
	defer cancel()
	s.claims.release(rctx, j)
}

// requeuePause is how long a message waits before it is requeued when
// requeueing it at once would bring it straight back to fail the same
// way: its copy was unroutable and the topology could not be declared
// again, or it is too large to copy and could not run now.
const requeuePause = time.Second

// pause waits requeuePause, or until hctx ends.
func (s *settler) pause(hctx context.Context) {
	t := time.NewTimer(requeuePause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-hctx.Done():
	}
}

// copyFailed handles a retry copy or dead letter that the broker did not
// confirm. The original is never acked then:
//   - its target queue is gone (unroutable): the topology is declared
//     again and the message requeued, to be tried again (after
//     requeuePause when the declaration failed);
//   - the message is over the broker's max_message_size: no copy of it
//     can be stored, so it goes to the broker's own dead-lettering at once
//     (a reject, which the queue routes to its .dlq, unchanged), reason
//     too_large; but a message that went round a tier without spending
//     an attempt (in progress elsewhere, the store down, over its key's
//     limit, its dependency down) has not had its turn, so it is
//     requeued after requeuePause instead;
//   - the broker refused the copy itself otherwise: a retry becomes a
//     dead letter, and a dead letter falls back to the broker's own
//     dead-lettering (a reject);
//   - anything else (a lost connection, a timeout): it is requeued.
func (s *settler) copyFailed(hctx context.Context, j *job, res result, err error) result {
	s.log.Warn("storing the message's copy failed", append(messageFields(j.d), zap.String("copy", string(res.Outcome)), zap.Error(err))...)
	var (
		ce *broker.ChannelError
		ue *broker.UnroutableError
		tl *broker.MessageTooLargeError
	)
	if errors.As(err, &tl) && res.Outcome == OutcomeRetry && !res.spend {
		defer s.releaseHeld(hctx, j)
		s.log.Warn("the message is too large to go round a tier; requeueing it after a pause",
			zap.Duration("pause", requeuePause))
		s.pause(hctx)
		res.Outcome, res.err = OutcomeRequeue, errors.Join(res.err, err)
		j.stale = errors.Is(j.bd.Nack(true), broker.ErrStale)
		return res
	}
	if errors.As(err, &tl) {
		defer s.releaseHeld(hctx, j)
		res.Outcome, res.Reason, res.err = OutcomeDeadLetter, KindTooLarge, errors.Join(res.err, err)
		j.stale = errors.Is(j.bd.Nack(false), broker.ErrStale)
		return res
	}
	if errors.As(err, &ce) && res.Outcome == OutcomeRetry {
		// The broker refused the copy itself: keep it as a dead letter.
		dl := result{Decision: Decision{Outcome: OutcomeDeadLetter, Kind: res.Kind, Reason: KindUnpublished}, err: errors.Join(res.err, err)}
		return s.settle(hctx, j, dl)
	}
	defer s.releaseHeld(hctx, j)
	switch {
	case errors.As(err, &ue):
		if derr := s.copies.Redeclare(hctx); derr != nil {
			// The copy's queue is still missing: requeued at once, the
			// message would come straight back and fail the same way,
			// as fast as the broker delivers. Hold it a moment first.
			s.log.Warn("declaring the topology again failed; requeueing the message after a pause",
				zap.Duration("pause", requeuePause), zap.Error(derr))
			s.pause(hctx)
		}
	case errors.As(err, &ce):
		res.Reason, res.err = KindUnpublished, errors.Join(res.err, err)
		j.stale = errors.Is(j.bd.Nack(false), broker.ErrStale)
		return res
	}
	res.Outcome, res.err = OutcomeRequeue, errors.Join(res.err, err)
	j.stale = errors.Is(j.bd.Nack(true), broker.ErrStale)
	return res
}
