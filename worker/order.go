package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenmq/warren/broker"
)

// MaxPartitions bounds Order.Partitions.
const MaxPartitions = 1000

// Order makes a route ordered: messages with the same ordering key are
// handled one at a time, in publish order, across every worker of the
// route, while different keys run in parallel.
//
// The route's Exchange (required) is declared as a consistent-hash
// exchange (the rabbitmq_consistent_hash_exchange plugin must be enabled
// on the broker) that splits the messages over Partitions queues named
// Q.p0 ... Q.p<N-1>, by a hash of the routing key or of HashHeader. Each
// partition is a queue with single active consumer: one worker at a time
// consumes it, one message at a time, and another takes over when that
// worker dies. Each partition has its own retry tiers and dead-letter
// queue (Q.p0.dlq, ...). Keys that hash to the same partition wait for
// each other: more partitions, more parallelism.
//
// A failing message holds its partition: it is retried in place, after
// its tier's delay, while the messages behind it wait (the cost: the
// partition stalls for the delays; the attempt count is kept in memory,
// so a worker that dies mid-way leaves the message to start again at its
// header's attempt). With Overtake, retries go through the delay tiers
// instead, and the key's next messages overtake the failing one. A dead
// letter leaves the partition: the key's next messages go on without it.
// A message whose handler says Unavailable is put back at the head of the
// partition (not through a tier) and that partition's consumer pauses
// (each partition pauses on its own); so is a failing one whose failures
// pause the partition (Pause.After). Changing
// Partitions re-hashes keys over the new set: messages already in a
// partition queue stay there (a removed partition must be drained by
// hand), and for a key that moves, order between its old and new
// partitions holds only once the old one is empty; change it while
// publishers are stopped and the partitions drained.
type Order struct {
	// Partitions is how many partition queues the route is split over. 0
	// means the route is not ordered.
	Partitions int
	// HashHeader names the header whose value is the ordering key. ""
	// means the routing key. (A body field must be copied to a header by
	// the publisher: the broker routes on headers, not bodies.)
	HashHeader string
	// Overtake sends retries through the delay tiers, so the key's next
	// messages overtake a failing one. false means retries in place.
	Overtake bool
}

func (o Order) validate(r Route) error {
	switch {
	case o.Partitions == 0:
		return nil
	case o.Partitions < 0 || o.Partitions > MaxPartitions:
		return fmt.Errorf("order: partitions must be between 1 and %d, got %d", MaxPartitions, o.Partitions)
	case r.Exchange == "":
		return errors.New("order: an ordered route needs an Exchange, declared as a consistent-hash exchange")
	case !r.Limits.zero():
		return errors.New("order: per-key limits would send messages round the tiers, out of order; use one or the other")
	}
	return nil
}

// PartitionQueue is the name of partition i of ordered queue q.
func PartitionQueue(q string, i int) string { return fmt.Sprintf("%s.p%d", q, i) }

// partitions expands ordered route r into one route per partition.
func (r Route) partitions() []Route {
	if r.Order.Partitions == 0 {
		return []Route{r}
	}
	out := make([]Route, 0, r.Order.Partitions)
	for i := range r.Order.Partitions {
		p := r
		p.Queue = PartitionQueue(r.Queue, i)
		p.Concurrency = 1
		p.Prefetch = min(r.Prefetch, 2)
		p.ExchangeKind = broker.ConsistentHash
		p.BindingKeys = []string{"1"} // equal weights
		out = append(out, p)
	}
	return out
}

// orderArgs adds what an ordered route's partition queue and exchange
// need to their declarations.
func (r Route) orderArgs(queueArgs map[string]any) map[string]any {
	if r.Order.Partitions == 0 {
		return nil
	}
	queueArgs["x-single-active-consumer"] = true
	if r.Order.HashHeader != "" {
		return map[string]any{"hash-header": r.Order.HashHeader}
	}
	return nil
}

// inPlace retries res's message in place while it is a retry that spends
// an attempt: it waits the tier's delay, holding the partition, and runs
// the handler again. Each failure is reported to the partition's breaker
// as it comes (trial: the first run was the trial; the trial returned is
// false once reported); when the failures pause the partition, the
// message goes back to the head of its queue instead of waiting, as one
// whose handler said Unavailable does. A message that could not run yet
// waits here the same way, spending no attempt, and claims again (see
// waitsInPlace): round a tier, the partition's next message would
// overtake it, and could run beside it. When the drain begins during a
// wait, the message goes back to the head of its queue too.
func (p *pipeline) inPlace(hctx context.Context, j *job, res result, trial bool) (result, bool) {
	for res.Outcome == OutcomeRetry && (res.spend || p.waitsInPlace(j, res)) {
		if res.spend {
			paused := p.gate.failedInPlace(trial, res)
			trial = false
			if paused {
				return requeue(res.Kind, res.err), false
			}
		}
		wait := res.Delay
		if res.Kind == KindInProgress {
			// As a parked job checks its holder: a few times a lease,
			// whatever tier the message's header has reached.
			wait = max(p.exec.policy.Delays[0], p.intake.claims.lease/holderChecks)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.stopping:
			t.Stop()
			return requeue(res.Kind, res.err), trial
		case <-hctx.Done():
			t.Stop()
			return requeue(res.Kind, res.err), trial
		}
		if res.spend {
			j.d.Attempt++
		} else {
			// Claim anew: the answer kept from the last claim is stale.
			j.claimed, j.status, j.cerr = false, 0, nil
		}
		res = p.exec.execute(hctx, j)
	}
	if res.Kind == KindUnavailable {
		return requeue(res.Kind, res.err), trial
	}
	return res, trial
}

// waitsInPlace reports whether res's message, which could not run yet,
// waits in place for its turn rather than going round a tier: while the
// dedupe store is down, and while another owner holds its claim (a
// worker that lost its broker connection but still runs it: its handler
// timeout and attempts bound that, and a dead one's claim lapses within
// a lease). Not when this route holds the claim itself: a copy of the
// message waits behind it in the partition, and could never run while it
// waits; it goes round a tier, and comes back as a duplicate. (Dedupe
// keys are per partition queue, and a partition has one consumer, so no
// other partition's head can wait on this one.)
func (p *pipeline) waitsInPlace(j *job, res result) bool {
	if res.Outcome != OutcomeRetry || res.spend {
		return false
	}
	switch res.Kind {
	case KindStoreDown:
		return true
	case KindInProgress:
		c := p.intake.claims
		return c != nil && !c.keeper.holds(j.d.IdempotencyKey)
	}
	return false
}
