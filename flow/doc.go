// Package flow holds the flow-control pieces a worker puts in front of
// its handlers. It knows nothing of AMQP or handlers: its callers report
// results and ask whether work may start.
//
// Breaker is the outage breaker of one route: it opens when told that a
// dependency is down (Trip) or after a number of consecutive failures,
// waits with backoff, probes (a check of the caller's, or one trial
// piece of work), and closes by itself:
//
//	b, err := flow.NewBreaker(flow.BreakerConfig{Threshold: 5, OnChange: func(c flow.Change) { log.Print(c.To) }})
//	go b.Run(ctx)
//	trial, ok := b.Admit(ctx)
//	if ok {
//		b.Report(trial, flow.ResultOf(doWork()))
//	}
package flow
