package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// status is the HTTP status of a GET, or 0 when it failed.
func status(url string) int {
	code, _, err := httpGet(url)
	if err != nil {
		return 0
	}
	return code
}

// TestE2EHealth: /livez and /readyz of `run` connected through a proxy
// that starts refusing connections and then lets them through again.
func TestE2EHealth(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	proxy, url := testenv.AMQPProxy(t)
	e := baseEnv().with("WARREN_AMQP_URL", url)
	script, log := outcomeScript(t)
	w := startRun(t, e, "-queue", q, "-exec", script)
	livez, readyz := "http://"+w.health+"/livez", "http://"+w.health+"/readyz"
	if code := status(livez); code != http.StatusOK {
		t.Fatalf("/livez %d, want 200", code)
	}
	if code := status(readyz); code != http.StatusOK {
		t.Fatalf("/readyz %d, want 200", code)
	}
	if got := w.metric("warren_ready"); got != 1 {
		t.Errorf("warren_ready %v, want 1", got)
	}

	proxy.Refuse(true)
	waitFor(t, 10*time.Second, "/readyz to answer 503", func() bool { return status(readyz) == http.StatusServiceUnavailable })
	if code := status(livez); code != http.StatusOK {
		t.Errorf("/livez %d while the broker is unreachable, want 200 (alive, not ready)", code)
	}
	if got := w.metric("warren_ready"); got != 0 {
		t.Errorf("warren_ready %v while the broker is unreachable, want 0", got)
	}

	proxy.Refuse(false)
	waitFor(t, 30*time.Second, "/readyz to answer 200 again", func() bool { return status(readyz) == http.StatusOK })
	if got := w.metric("warren_reconnects_total"); got < 2 {
		t.Errorf("warren_reconnects_total %v, want at least 2 (both connections)", got)
	}
	// And it processes again, through the reconnected consumer.
	publish(t, baseEnv(), q, "after", "ok")
	waitFor(t, settleWait, "the message after the reconnect", func() bool { return log.has("after 1 ok") == 1 })
	w.stop()
}

// TestE2EMetrics: message, dead-letter and publish-confirm counters on
// /metrics match what the worker did.
func TestE2EMetrics(t *testing.T) {
	t.Parallel()
	const k = 7

	t.Run("acks", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		e := baseEnv()
		script, log := outcomeScript(t)
		w := startRun(t, e, "-queue", q, "-exec", script)
		for i := 0; i < k; i++ {
			publish(t, e, q, fmt.Sprintf("a%d", i), "ok")
		}
		acks := fmt.Sprintf(`warren_messages_total{outcome="ack",queue=%q}`, q)
		waitFor(t, settleWait, "k acks on /metrics", func() bool { return w.metric(acks) == k })
		stays(t, quietWindow, acks, float64(k), func() float64 { return w.metric(acks) })
		if n := log.count(); n != k {
			t.Errorf("handler ran %d times, want %d", n, k)
		}
		text := w.scrape()
		for _, s := range []string{
			fmt.Sprintf(`warren_handler_duration_seconds_count{queue=%q}`, q),
		} {
			if got := metricValue(text, s); got != k {
				t.Errorf("%s = %v, want %d", s, got, k)
			}
		}
		for _, s := range []string{
			fmt.Sprintf(`warren_messages_total{outcome="retry",queue=%q}`, q),
			fmt.Sprintf(`warren_messages_total{outcome="dead_letter",queue=%q}`, q),
		} {
			if got := metricValue(text, s); got > 0 {
				t.Errorf("%s = %v, want none", s, got)
			}
		}
		if got := metricValue(text, fmt.Sprintf(`warren_messages_in_flight{queue=%q}`, q)); got != 0 {
			t.Errorf("in flight %v, want 0", got)
		}
		w.stop()
	})

	t.Run("dead letters", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		e := baseEnv()
		script, _ := outcomeScript(t)
		w := startRun(t, e, "-queue", q, "-exec", script)
		bad := 0
		for i := 0; i < k; i++ {
			body := "ok"
			if i%2 == 0 {
				body = "bad"
				bad++
			}
			publish(t, e, q, fmt.Sprintf("b%d", i), body)
		}
		dead := fmt.Sprintf(`warren_dead_letters_total{queue=%q,reason="permanent"}`, q)
		acks := fmt.Sprintf(`warren_messages_total{outcome="ack",queue=%q}`, q)
		waitFor(t, settleWait, "the dead letters on /metrics", func() bool {
			return w.metric(dead) == float64(bad) && w.metric(acks) == float64(k-bad)
		})
		stays(t, quietWindow, dead, float64(bad), func() float64 { return w.metric(dead) })
		text := w.scrape()
		if got := metricValue(text, fmt.Sprintf(`warren_messages_total{outcome="dead_letter",queue=%q}`, q)); got != float64(bad) {
			t.Errorf("dead_letter outcomes %v, want %d", got, bad)
		}
		if got := metricValue(text, "warren_publish_confirms_total"); got < float64(bad) {
			t.Errorf("warren_publish_confirms_total %v, want at least the %d dead letters", got, bad)
		}
		if got := metricValue(text, "warren_publish_nacks_total"); got != 0 {
			t.Errorf("warren_publish_nacks_total %v, want 0", got)
		}
		if n := admin.Count(retry.DLQ(q)); n != bad {
			t.Errorf("%s holds %d, want %d", retry.DLQ(q), n, bad)
		}
		w.stop()
	})
}
