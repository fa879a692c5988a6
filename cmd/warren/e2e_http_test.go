package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// hit is one POST the HTTP bridge made.
type hit struct {
	body, contentType string
	header            http.Header
}

// TestE2EHTTPBridge: `run -http` acks on 200, retries a 503 with
// Retry-After: 0 (through the smallest tier), dead-letters a 422, and
// sends the body and the X-Warren-* metadata headers.
func TestE2EHTTPBridge(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		hits []hit
	)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		mu.Lock()
		seen := 0
		for _, h := range hits {
			if h.body == body {
				seen++
			}
		}
		hits = append(hits, hit{body: body, contentType: r.Header.Get("Content-Type"), header: r.Header.Clone()})
		mu.Unlock()
		switch {
		case r.Method != http.MethodPost:
			http.Error(rw, "want POST", http.StatusMethodNotAllowed)
		case body == "ok" || body == "flaky" && seen > 0:
			fmt.Fprintln(rw, "done")
		case body == "flaky":
			rw.Header().Set("Retry-After", "0")
			http.Error(rw, "busy", http.StatusServiceUnavailable)
		case body == "bad":
			http.Error(rw, "cannot process this", http.StatusUnprocessableEntity)
		default:
			http.Error(rw, "unexpected body", http.StatusBadRequest)
		}
	}))
	t.Cleanup(srv.Close)
	snapshot := func() []hit {
		mu.Lock()
		defer mu.Unlock()
		return append([]hit(nil), hits...)
	}

	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	w := startRun(t, e, "-queue", q, "-http", srv.URL+"/job")
	ids := map[string]string{"ok": "h-ok", "flaky": "h-flaky", "bad": "h-bad"}
	for _, body := range []string{"ok", "flaky", "bad"} {
		r := mustWarren(t, e, "publish", "-routing-key", q, "-message-id", ids[body], "-content-type", "text/plain", body)
		if !strings.Contains(r.stdout, "confirmed") {
			t.Fatalf("no confirm\n%s", r)
		}
	}
	waitFor(t, settleWait, "4 requests and the dead letter", func() bool {
		return len(snapshot()) >= 4 && admin.Count(retry.DLQ(q)) == 1
	})
	stays(t, quietWindow, "the number of requests", 4, func() int { return len(snapshot()) })

	// Attempts seen per body, in order, read from X-Warren-Attempt.
	attempts := map[string][]string{}
	for _, h := range snapshot() {
		attempts[h.body] = append(attempts[h.body], h.header.Get("X-Warren-Attempt"))
		if h.contentType != "text/plain" {
			t.Errorf("%s: Content-Type %q, want text/plain", h.body, h.contentType)
		}
		if got := h.header.Get("X-Warren-Message-Id"); got != ids[h.body] {
			keys := make([]string, 0, len(h.header))
			for k := range h.header {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			t.Errorf("%s: X-Warren-Message-Id = %q, want %q; the request's header names: %s",
				h.body, got, ids[h.body], strings.Join(keys, ", "))
		}
	}
	want := map[string]string{"ok": "1", "flaky": "1,2", "bad": "1"}
	for body, w := range want {
		if got := strings.Join(attempts[body], ","); got != w {
			t.Errorf("%s: attempts %q, want %q", body, got, w)
		}
	}
	// Retry-After: 0 asks for the smallest tier.
	if got := w.metric(fmt.Sprintf(`warren_retries_total{queue=%q,tier="200ms"}`, q)); got != 1 {
		t.Errorf("retries through the 200ms tier: %v, want 1", got)
	}
	d, ok := admin.Get(retry.DLQ(q))
	if !ok {
		t.Fatal("the dead letter is gone")
	}
	if string(d.Body) != "bad" || d.MessageId != "h-bad" {
		t.Errorf("dead letter %q %q, want h-bad bad", d.MessageId, d.Body)
	}
	if got := d.Headers[worker.HeaderDeadLetterReason]; got != worker.KindPermanent {
		t.Errorf("%s = %v, want %q", worker.HeaderDeadLetterReason, got, worker.KindPermanent)
	}
	if got, _ := d.Headers[worker.HeaderError].(string); !strings.Contains(got, "422") {
		t.Errorf("%s = %q, want the 422 status", worker.HeaderError, got)
	}
	w.stop()
}
