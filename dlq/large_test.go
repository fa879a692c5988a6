package dlq_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/console"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

const (
	largeN      = 100_000
	largeBody   = 1024 // 100 MB of bodies in all
	largeCauses = 150  // three pages of 50 groups
)

// cause is the i-th error text: letters only in the cause's name, so that
// numbers in it are what the fingerprint takes out.
func cause(i, n int) string {
	name := string(rune('a'+i%26)) + string(rune('a'+i/26%26))
	return fmt.Sprintf("step %s failed for order %d after %dms", name, n, n%997)
}

// publishLarge fills q's DLQ with largeN dead letters through batches of
// confirmed publishes from a few goroutines.
func publishLarge(t *testing.T, conn *broker.Conn, q string) {
	t.Helper()
	body := []byte(strings.Repeat("x", largeBody))
	var wg sync.WaitGroup
	var failed atomic.Int64
	const workers, batch = 4, 500
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			pub := conn.NewPublisher()
			defer pub.Close()
			for start := w * batch; start < largeN; start += workers * batch {
				out := make([]broker.Outgoing, 0, batch)
				for n := start; n < min(start+batch, largeN); n++ {
					out = append(out, broker.Outgoing{RoutingKey: retry.DLQ(q), Message: broker.Message{Body: body, Transient: true,
						Headers: map[string]any{worker.HeaderError: cause(n%largeCauses, n), worker.HeaderErrorKind: worker.KindError,
							worker.HeaderLastFailure: time.Unix(1_700_000_000+int64(n), 0).UTC().Format(time.RFC3339)}}})
				}
				for _, err := range pub.PublishBatch(context.Background(), out) {
					if err != nil {
						failed.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d publishes failed", failed.Load())
	}
}

// heapDuring runs fn while sampling the live heap, and returns the peak
// growth over the heap before fn and the growth it leaves after a GC.
func heapDuring(fn func()) (peak, retained uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var top uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var s runtime.MemStats
			runtime.ReadMemStats(&s)
			top = max(top, s.HeapAlloc)
			select {
			case <-stop:
				done <- top
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(stop)
	top := <-done
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return top - min(top, base), ms.HeapAlloc - min(ms.HeapAlloc, base)
}

// TestLargeDLQ: 100,000 dead letters of 1 KiB (100 MB of bodies) are
// indexed with a bounded heap, the index is paged by cause, and the
// console's group pages and one message page answer.
func TestLargeDLQ(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the 100,000-letter DLQ")
	}
	t.Parallel()
	admin, conn, q := fixture(t)
	start := time.Now()
	publishLarge(t, conn, q)
	if n := admin.WaitCount(retry.DLQ(q), largeN, 30*time.Second); n != largeN {
		t.Fatalf("%d dead letters published, want %d", n, largeN)
	}
	t.Logf("published %d dead letters in %s", largeN, time.Since(start).Round(time.Millisecond))

	base, stop := startConsole(t, conn, q)
	defer stop()
	start = time.Now()
	var page string
	peak, retained := heapDuring(func() { page = waitIndexed(t, base, q) })
	t.Logf("the console indexed %d letters in %s; heap growth: peak %d MiB, retained %d MiB (bodies: %d MiB)",
		largeN, time.Since(start).Round(time.Millisecond), peak>>20, retained>>20, largeN*largeBody>>20)
	if peak > 64<<20 || retained > largeN*256 {
		t.Errorf("heap grew by %d MiB at the peak and kept %d bytes a letter: want under 64 MiB and 256 bytes, far below the %d MiB of bodies", peak>>20, retained/largeN, largeN*largeBody>>20)
	}
	checkPages(t, base, page)
	// What the scan read goes back as its channels close.
	if n := admin.WaitCount(retry.DLQ(q), largeN, 30*time.Second); n != largeN {
		t.Fatalf("after the scan and the pages the DLQ holds %d, want %d", n, largeN)
	}
}

// startConsole runs a console on q in this process.
func startConsole(t *testing.T, conn *broker.Conn, q string) (base string, stop func()) {
	c, err := console.New(console.Config{Conn: conn, Routes: []string{q}, Auth: console.Auth{Insecure: true}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- c.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

// waitIndexed waits for the console's first group page.
func waitIndexed(t *testing.T, base, q string) string {
	deadline := time.Now().Add(5 * time.Minute) // generous: the shared broker may be busy
	page := ""
	for !strings.Contains(page, `id="summary"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the console did not index %s in time:\n%s", q, page)
		}
		time.Sleep(100 * time.Millisecond)
		page = get(t, base+"/groups")
	}
	return page
}

// checkPages reads group pages 1 and 3 and a message on page 2 of a
// group.
func checkPages(t *testing.T, base, page string) {
	want := fmt.Sprintf("%s dead letters in %d groups. Page 1 of 3.", "100,000", largeCauses)
	if !strings.Contains(page, want) || strings.Count(page, "<tr data-group=") != 50 {
		t.Fatalf("group page 1: want %q and 50 rows\n%s", want, page)
	}
	page3 := get(t, base+"/groups?page=3")
	if !strings.Contains(page3, "Page 3 of 3.") || strings.Count(page3, "<tr data-group=") != 50 || !strings.Contains(page3, `rel="prev"`) {
		t.Fatalf("group page 3\n%s", page3)
	}
	group := regexp.MustCompile(`/messages\?group=([0-9a-f]{16})`).FindStringSubmatch(page3)
	msgs := get(t, base+"/messages?page=2&group="+group[1])
	link := regexp.MustCompile(`/message\?queue=[^"]+&amp;id=[0-9a-f]{16}`).FindString(msgs)
	if link == "" {
		t.Fatalf("no message on page 2 of a group\n%s", msgs)
	}
	msg := get(t, base+strings.ReplaceAll(link, "&amp;", "&"))
	if !strings.Contains(msg, `id="error-text">step `) || !strings.Contains(msg, "1,024 bytes") {
		t.Fatalf("message page\n%s", msg)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 3 * time.Minute}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}
