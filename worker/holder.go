package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
)

// holderChecks is how many times in a lease a parked job is claimed
// again.
const holderChecks = 4

// parking holds the jobs whose claim another owner held when intake
// claimed them, outside the handlers (see park), and hands them to the
// handlers once they are decided.
type parking struct {
	ready chan *job    // decided jobs, for the handlers
	in    atomic.Int32 // jobs parked now
	room  int32        // most jobs parked at once
}

// newParking makes room for the whole prefetch window: a worker that
// takes over a dead worker's messages may wait up to one lease with its
// window full of them, rather than send any of them to the back of the
// queue.
func newParking(prefetch int) *parking {
	return &parking{ready: make(chan *job), room: int32(max(1, prefetch))}
}

// park gives a job whose claim another owner held when intake claimed it
// a chance to run here rather than go round a tier. The common case is a
// worker killed mid-run: the broker hands its messages to another worker
// at once, but their claims stay leased to the dead worker until the
// lease runs out, and a tier round would put each copy at the back of
// the queue, behind the whole backlog. A parked job keeps its delivery
// (unacked, the broker sends nothing in its place) but no handler: a
// goroutine claims it again at once and then every lease/holderChecks
// for up to one lease, and hands it to the handlers as soon as the claim
// is taken (it runs here), found done (a duplicate), or still held at
// the end (a live holder renews its lease all along: the message is
// really running elsewhere, and goes round the tier as before). When the
// drain begins it goes back to the queue. On an ordered route the job
// waits the same way but in its handler, so that the partition's next
// message cannot overtake it. park reports false, and leaves the job to
// the caller, when the job is not such a job, the parking is full, or
// (ordered) it is decided.
func (p *pipeline) park(hctx context.Context, j *job) bool {
	c, pk := p.intake.claims, p.parked
	if c == nil || j.parked || !j.claimed || j.cerr != nil || j.status != dedupe.InProgress {
		return false
	}
	if p.ordered {
		// The partition's next message must not overtake this one: it
		// waits here, holding the partition's handler.
		j.parked = true
		if p.awaitHolder(hctx, j) {
			return false
		}
		rctx, cancel := releaseContext(hctx)
		p.giveBack(rctx, []*job{j})
		cancel()
		return true
	}
	if pk.in.Add(1) > pk.room {
		pk.in.Add(-1)
		return false
	}
	j.parked = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		decided := p.awaitHolder(hctx, j)
		pk.in.Add(-1)
		if decided {
			select {
			case pk.ready <- j:
				return
			case <-p.stopping:
			}
		}
		rctx, cancel := releaseContext(hctx)
		p.giveBack(rctx, []*job{j})
		cancel()
	}()
	return true
}

// awaitHolder claims j again until the claim is taken or found done, or
// one lease has passed. It reports false when the drain began first.
func (p *pipeline) awaitHolder(hctx context.Context, j *job) (decided bool) {
	c := p.intake.claims
	deadline := time.Now().Add(c.lease)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.stopping:
			return false
		case <-hctx.Done():
			return false
		}
		owner, now := broker.NewMessageID(), time.Now()
		st, err := c.store.Claim(hctx, j.d.IdempotencyKey, owner, c.lease)
		if err != nil {
			return true // the job keeps intake's answer
		}
		if st != dedupe.InProgress {
			j.owner, j.status, j.claimedAt = owner, st, now
			if j.ownClaim() {
				c.hold(j, now)
			}
			return true
		}
		if !now.Before(deadline) {
			return true
		}
		t.Reset(min(c.lease/holderChecks, time.Until(deadline)))
	}
}
