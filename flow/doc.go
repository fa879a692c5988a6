// Package flow holds the flow-control pieces a worker puts in front of
// its handlers. It knows nothing of AMQP or handlers: its callers report
// results and ask whether work may start.
//
// Breaker is the outage breaker of one stream of work: it opens when
// told that a dependency is down (Trip) or after a number of consecutive
// failures, waits with backoff, probes (a check of the caller's, or one
// trial piece of work), and closes by itself:
//
//	b, err := flow.NewBreaker(flow.BreakerConfig{Threshold: 5})
//	go b.Run(ctx)
//	if trial, ok := b.Admit(ctx); ok {
//		err := doWork()
//		b.Report(trial, resultOf(err), err)
//	}
//
// Limiter keeps per-key concurrency and rate limits in Redis, across
// every process that shares it; concurrency slots are leases, so a dead
// process's slots come back:
//
//	l, err := flow.NewLimiter(redisClient, flow.LimiterConfig{Prefix: "app"})
//	slot, err := l.Acquire(ctx, "invoices", tenant, flow.Limit{Concurrency: 2, Rate: 100, Period: time.Minute})
//	if err == nil && slot.Held() {
//		stop := slot.Keep(nil)
//		doWork()
//		stop()
//		_ = slot.Release(ctx)
//	}
package flow
