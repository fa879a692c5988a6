// Package broker is warren's AMQP side: a supervised connection that
// reconnects with jittered backoff and declares its topology again,
// topology declaration with drift errors, a confirmed publisher, and
// consumers whose acks are coalesced on the channel that delivered them.
// It knows nothing of handlers, Redis or retry policy.
//
// The smallest real use:
//
//	conn, err := broker.Dial(ctx, broker.Config{URL: "amqp://guest:guest@localhost:5672/"})
//	if err != nil {
//		return err
//	}
//	defer conn.Close()
//	err = conn.Declare(ctx, broker.Topology{
//		Queues: []broker.Queue{{Name: "jobs", Type: broker.Quorum}},
//	})
//	if err != nil {
//		return err
//	}
//	pub := conn.NewPublisher()
//	defer pub.Close()
//	if err := pub.Publish(ctx, "", "jobs", broker.Message{Body: []byte("hello")}); err != nil {
//		return err // not confirmed: publish again
//	}
//	cons, err := conn.Consume(broker.ConsumerConfig{Queue: "jobs", Prefetch: 10})
//	if err != nil {
//		return err
//	}
//	d := <-cons.Deliveries()
//	_ = d.Ack()
//	cons.Stop()
//	return cons.Close()
package broker
