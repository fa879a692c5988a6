package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestPublisherUnderCutsLosesNothingConfirmed publishes from many
// goroutines while the connection is cut again and again. Every publish
// that returned nil must be in the queue: success is reported only for
// confirmed messages. Publishes that failed are counted; none may be
// silently lost after being reported confirmed.
func TestPublisherUnderCutsLosesNothingConfirmed(t *testing.T) {
	t.Parallel()
	a := testenv.NewAdmin(t)
	proxy, url := testenv.AMQPProxy(t)
	c := dial(t, url)
	ex, q := declareSimple(t, a, c, broker.Quorum)
	pub := c.NewPublisher()
	defer pub.Close()
	// The publishers go on until the proxy has cut the connection
	// wantCuts times, however fast the machine publishes.
	const workers, wantCuts = 16, 3
	var (
		mu        sync.Mutex
		confirmed = map[string]bool{}
		published atomic.Int32
		failed    atomic.Int32
		wg        sync.WaitGroup
	)
	cutsDone := make(chan struct{})
	go func() {
		defer close(cutsDone)
		for range wantCuts {
			time.Sleep(150 * time.Millisecond)
			proxy.Cut()
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-cutsDone:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				published.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := pub.Publish(ctx, ex, "k", broker.Message{MessageID: id})
				cancel()
				if err != nil {
					if failed.Add(1) <= 3 {
						t.Logf("publish %s failed: %v", id, err)
					}
					continue
				}
				mu.Lock()
				confirmed[id] = true
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	found := map[string]int{}
	for {
		d, ok := a.Get(q)
		if !ok {
			break
		}
		found[d.MessageId]++
	}
	missing, dups := 0, 0
	for id := range confirmed {
		if found[id] == 0 {
			missing++
		}
	}
	for _, n := range found {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("cuts %d, published %d, confirmed %d, failed %d, found %d distinct, %d duplicate copies",
		wantCuts, published.Load(), len(confirmed), failed.Load(), len(found), dups)
	if len(confirmed) == 0 {
		t.Fatal("nothing was confirmed")
	}
	if missing > 0 {
		t.Fatalf("%d messages reported confirmed are not in the queue", missing)
	}
}
