package worker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/worker"
)

// TestSteadyGoroutinesAndHeap processes waves of messages with dedupe on
// and checks that the goroutine count and the heap after each wave stay
// flat. Not parallel: it counts the whole process's goroutines.
func TestSteadyGoroutinesAndHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("long run")
	}
	cfg := testConfig(t)
	cfg.Dedupe = worker.DedupeOn
	cfg.RedisURL = testenv.RedisURL()
	cfg.DedupePrefix = testenv.Name(t)
	cfg.Concurrency = 16
	t.Cleanup(func() { testenv.DeleteRedisPrefix(t, testenv.RedisClient(t), cfg.DedupePrefix) })
	var handled atomic.Int64
	f := newFixture(t, cfg, worker.Route{Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		handled.Add(1)
		return nil
	})}).start()
	const waves, perWave = 5, 2000
	goroutines := make([]int, waves)
	heap := make([]uint64, waves)
	msgs := make([]broker.Outgoing, perWave)
	for w := 0; w < waves; w++ {
		for i := range msgs {
			msgs[i] = broker.Outgoing{RoutingKey: f.queue, Message: broker.Message{MessageID: fmt.Sprintf("w%d-%d", w, i), Body: make([]byte, 256)}}
		}
		publishAll(t, f, msgs)
		waitUntil(t, 60*time.Second, func() bool { return handled.Load() == int64((w+1)*perWave) })
		waitUntil(t, 10*time.Second, func() bool { return f.admin.Count(f.queue) == 0 })
		time.Sleep(100 * time.Millisecond) // let the last acks and timers settle
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		goroutines[w], heap[w] = runtime.NumGoroutine(), ms.HeapInuse
		t.Logf("after wave %d (%d messages): %d goroutines, heap in use %.1f MiB", w+1, (w+1)*perWave, goroutines[w], float64(ms.HeapInuse)/(1<<20))
	}
	if goroutines[waves-1] > goroutines[0]+5 {
		t.Errorf("goroutines grew from %d to %d", goroutines[0], goroutines[waves-1])
	}
	if heap[waves-1] > 2*heap[0]+8<<20 {
		t.Errorf("heap grew from %d to %d bytes", heap[0], heap[waves-1])
	}
}

func publishAll(t *testing.T, f *fixture, msgs []broker.Outgoing) {
	t.Helper()
	conn, err := broker.Dial(context.Background(), broker.Config{URL: testenv.AMQPURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, err := range pub.PublishBatch(ctx, msgs) {
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}
