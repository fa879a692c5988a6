// Package worker is warren's runtime: it consumes RabbitMQ queues with a
// bounded pool of handlers per queue, and acks, retries (delayed, on the
// broker) or dead-letters each message according to what its handler
// returned, with Redis deduplication so that a message's effect happens
// once.
//
// For each route on queue Q it declares Q (dead-lettering to Q.dlq), one
// delay tier queue Q.retry.<delay> per retry delay (expiring back into Q
// alone) and Q.dlq. A retry copy or a dead letter is confirmed by the
// broker before the original is acked, so a crash at any point leads to a
// redelivery, never to a loss.
//
// The smallest real use:
//
//	cfg, err := worker.FromEnv() // WARREN_AMQP_URL, WARREN_REDIS_URL, ...
//	if err != nil {
//		log.Fatal(err)
//	}
//	w, err := worker.New(cfg)
//	if err != nil {
//		log.Fatal(err)
//	}
//	err = w.Handle(worker.Route{
//		Queue:    "emails",
//		Exchange: "events",
//		BindingKeys: []string{"user.signed_up"},
//		Handler: worker.JSON(func(ctx context.Context, d *worker.Delivery, u User) error {
//			return sendWelcome(ctx, u, d.IdempotencyKey)
//		}),
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	if err := w.Run(ctx); err != nil {
//		log.Fatal(err)
//	}
//
// Shutdown order, on ctx's end: consumers are cancelled and prefetched
// messages that no handler started are requeued; handlers in flight get
// WARREN_SHUTDOWN_TIMEOUT to finish, after which their contexts are
// cancelled and Run waits for them to return; their results are stored
// and acked; the consumer channels flush their acks and close; then the
// publisher, both connections and the Redis client close. A handler that
// ignores its context holds the drain up: Run never abandons a goroutine.
package worker
