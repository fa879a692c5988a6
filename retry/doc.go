// Package retry is the retry policy of warren workers: how many times a
// message may be handled, how long to wait between attempts, and the names
// of the queues that hold messages while they wait.
//
// Retries are delayed by the broker. For a consumed queue Q there is one
// tier queue per delay, named Q.retry.<delay> (for example orders.retry.5s),
// with a fixed x-message-ttl. Expired messages are dead-lettered back to Q.
// Messages that run out of attempts go to the dead-letter queue Q.dlq. The
// attempt number travels in the warren-attempt header; the first delivery
// is attempt 1.
//
// This package does no I/O. It only decides; the worker and broker
// packages act on the decisions.
//
// The smallest real use, after attempt 2 of a message from "orders" failed:
//
//	p := retry.Policy{Delays: []time.Duration{time.Second, time.Minute}, MaxAttempts: 3}
//	if delay, ok := p.Next(2); ok {
//		publishTo(retry.TierQueue("orders", delay)) // "orders.retry.1m"
//	} else {
//		publishTo(retry.DLQ("orders")) // "orders.dlq"
//	}
package retry
