package dedupe_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/dedupe"
)

func ExampleNewMemory() {
	ctx := context.Background()
	store := dedupe.NewMemory()
	key := dedupe.Key("", "orders", "msg-1")

	st, _ := store.Claim(ctx, key, "worker-a", 30*time.Second)
	fmt.Println(st) // run the handler
	_ = store.MarkDone(ctx, key, "worker-a", 24*time.Hour)

	st, _ = store.Claim(ctx, key, "worker-b", 30*time.Second)
	fmt.Println(st) // a redelivery: ack without running
	// Output:
	// claimed
	// done
}

func ExampleNewRedis() {
	ctx := context.Background()
	opts, err := dedupe.ParseRedisURL("redis://127.0.0.1:6379/0")
	if err != nil {
		panic(err)
	}
	client := redis.NewUniversalClient(opts)
	defer client.Close()
	store, err := dedupe.NewRedis(client, dedupe.RedisConfig{})
	if err != nil {
		panic(err)
	}
	key := dedupe.Key("", "orders", "msg-1")
	switch st, err := store.Claim(ctx, key, "worker-a/delivery-7", 30*time.Second); {
	case err != nil:
		// store down: requeue the message
	case st == dedupe.Claimed:
		// run the handler, then:
		_ = store.MarkDone(ctx, key, "worker-a/delivery-7", 24*time.Hour)
	case st == dedupe.Done:
		// duplicate: ack
	case st == dedupe.InProgress:
		// another worker has it: requeue later
	}
}
