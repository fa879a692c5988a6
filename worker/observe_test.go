package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/worker"
)

// gathered is one gather of a worker's registry: each series' value by
// "name{label=value,...}" (labels sorted), histograms by their count.
type gathered map[string]float64

func gather(t *testing.T, w *worker.Worker) (gathered, map[string]dto.MetricType) {
	t.Helper()
	mfs, err := w.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	g, types := gathered{}, map[string]dto.MetricType{}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetGauge() != nil:
				g[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				g[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				g[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return g, types
}

// TestLagMetrics: the poller reports the ready messages and consumers of
// the route's queue, tiers and dead-letter queue; the wait before a
// handler started is observed for first deliveries; the dead-letter age rises while the DLQ
// holds messages and is 0 once it is emptied. The dashboard and the
// alert rules use only metric names the worker exports.
func TestLagMetrics(t *testing.T) {
	t.Parallel()
	cfg, _ := dedupeConfig(t, testenv.RedisURL())
	cfg.LagInterval = worker.MinLagInterval
	f := newFixture(t, cfg, worker.Route{Queue: ".lag", Handler: worker.HandlerFunc(func(_ context.Context, d *worker.Delivery) error {
		switch {
		case string(d.Body) == "bad":
			return worker.Permanent(errors.New("bad body"))
		case string(d.Body) == "flaky" && d.Attempt == 1:
			return errors.New("flaky the first time")
		}
		return nil
	})}).start()
	q := f.queue + ".lag"
	f.publish(".lag", broker.Message{Body: []byte("ok")})
	f.publish(".lag", broker.Message{Body: []byte("bad")})
	f.publish(".lag", broker.Message{Body: []byte("flaky")})

	var g gathered
	waitUntil(t, 20*time.Second, func() bool {
		g, _ = gather(t, f.w)
		return g["warren_queue_messages_ready{queue="+q+".dlq}"] == 1 &&
			g["warren_queue_consumers{queue="+q+"}"] == 1 &&
			g["warren_dead_letter_oldest_age_seconds{queue="+q+"}"] > 0 &&
			g["warren_messages_total{outcome=ack,queue="+q+"}"] == 2
	})
	// The retry's second run waited in a tier by design: not counted.
	if n := g["warren_queue_wait_seconds{queue="+q+"}"]; n != 3 {
		t.Errorf("warren_queue_wait_seconds observed %v waits, want 3 (first deliveries)", n)
	}
	for _, tier := range []string{".retry.200ms", ".retry.1s"} {
		if v, ok := g["warren_queue_messages_ready{queue="+q+tier+"}"]; !ok || v != 0 {
			t.Errorf("ready in %s: %v (present %v), want 0", tier, v, ok)
		}
	}
	if v := g["warren_dedupe_store_up{}"]; v != 1 {
		t.Errorf("warren_dedupe_store_up %v, want 1", v)
	}
	if n := purge(t, q+".dlq"); n != 1 {
		t.Fatalf("purged %d dead letters, want 1", n)
	}
	waitUntil(t, 20*time.Second, func() bool {
		g, _ = gather(t, f.w)
		return g["warren_queue_messages_ready{queue="+q+".dlq}"] == 0 && g["warren_dead_letter_oldest_age_seconds{queue="+q+"}"] == 0
	})

	// Every metric the dashboard and the rules name is exported.
	_, types := gather(t, f.w)
	used := observabilityNames(t)
	if len(used) < 10 {
		t.Fatalf("found only %v in the dashboard and rules", used)
	}
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && types[b] == dto.MetricType_HISTOGRAM {
				base = b
			}
		}
		if _, ok := types[base]; !ok {
			t.Errorf("%s is used by the dashboard or the alert rules but not exported", name)
		}
	}
}

// observabilityNames are the warren_* names in observability/.
func observabilityNames(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	re := regexp.MustCompile(`\bwarren_[a-z0-9_]*[a-z0-9]`)
	for _, file := range []string{"alerts.yml", "grafana-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join("..", "observability", file))
		if err != nil {
			t.Fatal(err)
		}
		var dashboard struct {
			Panels []struct {
				Targets []struct{ Expr string }
			}
		}
		if strings.HasSuffix(file, ".json") {
			if err := json.Unmarshal(b, &dashboard); err != nil || len(dashboard.Panels) == 0 {
				t.Fatalf("%s: %v, %d panels", file, err, len(dashboard.Panels))
			}
		}
		for _, m := range re.FindAllString(string(b), -1) {
			seen[m] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// purge empties queue and returns how many messages it held.
func purge(t *testing.T, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(testenv.AMQPURL())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	n, err := ch.QueuePurge(queue, false)
	if err != nil {
		t.Fatalf("purge %s: %v", queue, err)
	}
	return n
}
