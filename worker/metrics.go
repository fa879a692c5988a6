package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenmq/warren/retry"
)

// metrics are the worker's Prometheus collectors. Names follow the
// Prometheus conventions: a warren_ prefix, _total for counters, base
// units (seconds).
type metrics struct {
	messages   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   *prometheus.GaugeVec
	retries    *prometheus.CounterVec
	deadLetter *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	inProgress *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_messages_total",
			Help: "Messages settled, by queue and outcome (ack, retry, dead_letter, duplicate, discard, requeue).",
		}, []string{"queue", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_handler_duration_seconds",
			Help:    "Time from delivery to settlement of a message, handler included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"queue"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_messages_in_flight",
			Help: "Messages being handled right now.",
		}, []string{"queue"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_retries_total",
			Help: "Messages sent to a delay tier, by queue and tier.",
		}, []string{"queue", "tier"}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_dead_letters_total",
			Help: "Messages dead-lettered, by queue and reason.",
		}, []string{"queue", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_duplicates_total",
			Help: "Duplicates acked without running the handler, by queue.",
		}, []string{"queue"}),
		inProgress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_in_progress_total",
			Help: "Copies that found their message in progress elsewhere and went round a delay tier without spending an attempt, by queue.",
		}, []string{"queue"}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.messages, m.duration, m.inFlight, m.retries, m.deadLetter, m.duplicates, m.inProgress} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// queueMetrics are one queue's collectors, looked up once.
type queueMetrics struct {
	m        *metrics
	queue    string
	outcomes map[Outcome]prometheus.Counter
	duration prometheus.Observer
	dups     prometheus.Counter
	inFlight prometheus.Gauge
}

func (m *metrics) forQueue(queue string) *queueMetrics {
	q := &queueMetrics{m: m, queue: queue, outcomes: map[Outcome]prometheus.Counter{},
		duration: m.duration.WithLabelValues(queue), dups: m.duplicates.WithLabelValues(queue),
		inFlight: m.inFlight.WithLabelValues(queue)}
	for _, o := range []Outcome{OutcomeAck, OutcomeRetry, OutcomeDeadLetter, OutcomeDuplicate, OutcomeDiscard, OutcomeRequeue} {
		q.outcomes[o] = m.messages.WithLabelValues(queue, string(o))
	}
	return q
}

// observe records one settled message.
func (q *queueMetrics) observe(res result, took time.Duration) {
	q.outcomes[res.Outcome].Inc()
	q.duration.Observe(took.Seconds())
	switch res.Outcome {
	case OutcomeRetry:
		q.m.retries.WithLabelValues(q.queue, retry.FormatDelay(res.Delay)).Inc()
		if res.Kind == KindInProgress {
			q.m.inProgress.WithLabelValues(q.queue).Inc()
		}
	case OutcomeDeadLetter:
		q.m.deadLetter.WithLabelValues(q.queue, res.Reason).Inc()
	case OutcomeDuplicate:
		q.dups.Inc()
	}
}

// runtimeCollectors expose the connection and publisher counters.
func runtimeCollectors(rt *runtime, w *Worker) []prometheus.Collector {
	stats := rt.pub.Stats()
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_reconnects_total", Help: "Broker reconnections since start."},
			func() float64 { return float64(rt.consume.Reconnects() + rt.publish.Reconnects()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_publish_confirms_total", Help: "Publishes the broker confirmed."},
			func() float64 { return float64(stats.Confirmed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_publish_nacks_total", Help: "Publishes the broker refused."},
			func() float64 { return float64(stats.Nacked.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "warren_publish_returns_total", Help: "Publishes returned as unroutable."},
			func() float64 { return float64(stats.Returned.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_ready", Help: "1 when the worker is ready to process."},
			func() float64 {
				if w.Ready() {
					return 1
				}
				return 0
			}),
	}
}
