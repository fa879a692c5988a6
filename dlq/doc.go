// Package dlq is warren's toolkit for dead letters, shared by the
// `warren dlq` commands and `warren console`: it reads dead-letter queues
// without taking anything from them, groups dead letters by cause (error
// kind and a fingerprint of the error text with numbers, ids and
// addresses taken out), shows one message, and replays messages back to
// their queue or their original route, acking each dead letter only after
// the broker confirmed its copy.
//
// The smallest real use:
//
//	conn, err := broker.Dial(ctx, broker.Config{URL: url})
//	if err != nil {
//		return err
//	}
//	defer conn.Close()
//	ix, err := dlq.Scan(ctx, conn, []string{"orders.dlq"}, dlq.ScanOptions{})
//	if err != nil {
//		return err
//	}
//	groups, total := ix.Groups(dlq.Filter{}, 0, 20)
//	fmt.Println(total, groups[0].Kind, groups[0].Fingerprint, groups[0].Count)
//	pub := conn.NewPublisher()
//	defer pub.Close()
//	res, err := dlq.Replay(ctx, conn, pub, dlq.ReplayOptions{Queue: "orders", Match: dlq.Filter{Group: groups[0].Key}.Match})
//
// An index holds a few dozen bytes per dead letter, never bodies; bodies
// are read again from the queue when one message is shown.
package dlq
