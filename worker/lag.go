package worker

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
)

// inspector reads a queue's counts, the seam to the broker's passive
// declares.
type inspector interface {
	Inspect(ctx context.Context, queue string) (broker.QueueInfo, error)
	Close() error
}

// lagPoller polls the depth and consumers of every route's queue, retry
// tiers and dead-letter queue, every interval, one passive declare after
// another on a channel of its own.
type lagPoller struct {
	insp    inspector
	every   time.Duration
	metrics *metrics
	routes  []Route
	log     *zap.Logger
}

// startLag starts the poller; the returned func stops it and waits.
func (w *Worker) startLag(insp inspector, routes []Route) (stop func()) {
	l := &lagPoller{insp: insp, every: w.cfg.LagInterval, metrics: w.metrics, routes: routes,
		log: w.log.Named("lag")}
	for _, r := range routes {
		for _, q := range polledQueues(r) {
			l.metrics.pollErrors.WithLabelValues(q) // at 0 from the start
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.run(ctx) }()
	return func() {
		cancel()
		wg.Wait()
		_ = insp.Close()
	}
}

func (l *lagPoller) run(ctx context.Context) {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		l.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll reads every queue once; a failure is counted and logged at debug
// level (the connection's own lifecycle is logged elsewhere).
func (l *lagPoller) poll(ctx context.Context) {
	for _, r := range l.routes {
		dlq := retry.DLQ(r.Queue)
		for _, q := range polledQueues(r) {
			if ctx.Err() != nil {
				return
			}
			info, err := l.inspect(ctx, q)
			if err != nil {
				l.metrics.pollErrors.WithLabelValues(q).Inc()
				l.log.Debug("polling a queue failed", zap.String("queue", q), zap.Error(err))
				continue
			}
			l.metrics.ready.WithLabelValues(q).Set(float64(info.Messages))
			l.metrics.consumers.WithLabelValues(q).Set(float64(info.Consumers))
			if q == dlq {
				l.metrics.dlqOf(r.Queue).polled(info.Messages, time.Now())
			}
		}
	}
}

// inspect bounds one passive declare.
func (l *lagPoller) inspect(ctx context.Context, q string) (broker.QueueInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, max(l.every, 5*time.Second))
	defer cancel()
	return l.insp.Inspect(ctx, q)
}

// polledQueues are r's queue, its retry tiers and its dead-letter queue.
func polledQueues(r Route) []string {
	names := []string{r.Queue}
	for _, d := range r.Retry.Delays {
		names = append(names, retry.TierQueue(r.Queue, d))
	}
	return append(names, retry.DLQ(r.Queue))
}
