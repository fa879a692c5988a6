package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// TestOrderedRoutePerKeyOrder: on a broker with the consistent-hash
// plugin (the test broker, or a private node when it lacks it), two workers run an ordered route of four
// partitions. Several keys' messages, numbered in publish order, are
// handled one at a time per key and in order, also when one of them
// fails twice: it is retried in place and the key's next message waits
// for it. Halfway through, the worker that holds the partitions stops:
// single active consumer hands them to the other, and order holds across
// the hand-over.
func TestOrderedRoutePerKeyOrder(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.AMQPURL = testenv.ConsistentHashURL(t)
	cfg.RetryDelays = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
	const keys, perKey = 6, 12
	var (
		mu       sync.Mutex
		calls    = map[string][]int{} // key -> seq of each handler call, in call order
		running  = map[string]int{}   // key -> handlers running now
		overlap  error
		failures = map[string]int{}
		done     int
	)
	handler := worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
		key := d.RoutingKey
		seq, err := strconv.Atoi(string(d.Body))
		if err != nil {
			return worker.Permanent(err)
		}
		mu.Lock()
		running[key]++
		if running[key] > 1 && overlap == nil {
			overlap = fmt.Errorf("key %s had %d handlers at once", key, running[key])
		}
		calls[key] = append(calls[key], seq)
		fail := key == "key-2" && seq == 3 && failures[key] < 2
		if fail {
			failures[key]++
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		running[key]--
		if !fail {
			done++
		}
		mu.Unlock()
		if fail {
			return errors.New("fails twice")
		}
		return nil
	})
	route := worker.Route{
		Queue: ".q", Exchange: ".x", Handler: handler,
		Retry: retry.Policy{MaxAttempts: 5},
		Order: worker.Order{Partitions: 4},
	}
	f := newFixture(t, cfg, route).start()
	second := route
	second.Queue, second.Exchange = f.queue+".q", f.queue+".x"
	w2 := runWorker(t, cfg, second)
	publish := func(w *worker.Worker, from, to int) {
		for seq := from; seq < to; seq++ {
			for k := range keys {
				if err := w.Publish(context.Background(), f.queue+".x", fmt.Sprintf("key-%d", k),
					broker.Message{Body: []byte(strconv.Itoa(seq))}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(f.w, 0, perKey/2)
	waitUntil(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done >= keys*2
	})
	// The first worker subscribed first, so it is every partition's
	// active consumer; it drains and the second takes over.
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	publish(w2, perKey/2, perKey)
	waitUntil(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done == keys*perKey
	})
	mu.Lock()
	defer mu.Unlock()
	if overlap != nil {
		t.Fatal(overlap)
	}
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		want := []int{}
		for seq := range perKey {
			want = append(want, seq)
			if key == "key-2" && seq == 3 {
				want = append(want, seq, seq) // two failures, retried in place
			}
		}
		if fmt.Sprint(calls[key]) != fmt.Sprint(want) {
			t.Errorf("%s handled in the order %v, want %v", key, calls[key], want)
		}
	}
}

// TestOrderedRouteTopology: an ordered route declares a consistent-hash
// exchange (with its hash header) and one single-active-consumer queue
// per partition, each with its tiers and dead-letter queue; bad settings
// are refused with an error naming the problem.
func TestOrderedRouteTopology(t *testing.T) {
	w, err := worker.New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	h := worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })
	if err := w.Handle(worker.Route{Queue: "o", Exchange: "ox", Handler: h, Order: worker.Order{Partitions: 3, HashHeader: "tenant"}}); err != nil {
		t.Fatal(err)
	}
	top := w.Topology()
	if len(top.Exchanges) == 0 {
		t.Fatal("no exchange declared")
	}
	for _, e := range top.Exchanges {
		if e.Name != "ox" || e.Kind != broker.ConsistentHash || e.Args["hash-header"] != "tenant" {
			t.Fatalf("exchange %+v, want ox of kind %s hashing header tenant", e, broker.ConsistentHash)
		}
	}
	queues := map[string]broker.Queue{}
	for _, q := range top.Queues {
		queues[q.Name] = q
	}
	for i := range 3 {
		p := worker.PartitionQueue("o", i)
		q, ok := queues[p]
		if !ok || q.Args["x-single-active-consumer"] != true {
			t.Fatalf("partition %s: %+v, want a single-active-consumer queue", p, q)
		}
		if _, ok := queues[retry.DLQ(p)]; !ok {
			t.Fatalf("partition %s has no dead-letter queue", p)
		}
	}
	if _, ok := queues["o"]; ok {
		t.Fatal("an ordered route declared its unpartitioned queue")
	}
	var bound int
	for _, b := range top.Bindings {
		if b.Exchange == "ox" && b.RoutingKey == "1" {
			bound++
		}
	}
	if bound != 3 {
		t.Fatalf("%d partitions bound with weight 1, want 3", bound)
	}
	for _, bad := range []worker.Route{
		{Queue: "a", Handler: h, Order: worker.Order{Partitions: 2}},
		{Queue: "b", Exchange: "x", Handler: h, Order: worker.Order{Partitions: -1}},
		{Queue: "c", Exchange: "x", Handler: h, Order: worker.Order{Partitions: 2},
			Limits: worker.Limits{Key: func(*worker.Delivery) string { return "" }, Concurrency: 1}},
	} {
		if err := w.Handle(bad); err == nil {
			t.Fatalf("Handle accepted %+v", bad.Order)
		}
	}
}
