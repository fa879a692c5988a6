package worker

import (
	"sync"
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

	// Lag: the wait before a handler started, and what the poller saw.
	wait       *prometheus.HistogramVec
	ready      *prometheus.GaugeVec
	consumers  *prometheus.GaugeVec
	pollErrors *prometheus.CounterVec
	dlqAge     *prometheus.GaugeVec

	mu   sync.Mutex
	dlqs map[string]*dlqAge // by route queue
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
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_queue_wait_seconds",
			Help:    "Time a message waited in its queue before a handler started, from its AMQP timestamp (whole seconds), first deliveries only.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200},
		}, []string{"queue"}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_queue_messages_ready",
			Help: "Messages ready in a queue (a route's queue, its retry tiers and its dead-letter queue), as last polled.",
		}, []string{"queue"}),
		consumers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_queue_consumers",
			Help: "Consumers of a queue, as last polled.",
		}, []string{"queue"}),
		pollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_queue_poll_errors_total",
			Help: "Queue polls that failed, by queue.",
		}, []string{"queue"}),
		dlqAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_dead_letter_oldest_age_seconds",
			Help: "How long the route's dead-letter queue has held messages without being emptied: the age of its oldest dead letter when dead letters are replayed or purged all at once; 0 when empty.",
		}, []string{"queue"}),
		dlqs: map[string]*dlqAge{},
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.messages, m.duration, m.inFlight, m.retries, m.deadLetter, m.duplicates, m.inProgress,
		m.wait, m.ready, m.consumers, m.pollErrors, m.dlqAge} {
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
	wait     prometheus.Observer
	dlq      *dlqAge
}

func (m *metrics) forQueue(queue string) *queueMetrics {
	q := &queueMetrics{m: m, queue: queue, outcomes: map[Outcome]prometheus.Counter{},
		duration: m.duration.WithLabelValues(queue), dups: m.duplicates.WithLabelValues(queue),
		inFlight: m.inFlight.WithLabelValues(queue), wait: m.wait.WithLabelValues(queue), dlq: m.dlqOf(queue)}
	m.inProgress.WithLabelValues(queue) // at 0 from the start, so that rates are defined
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
		q.dlq.deadLettered(time.Now())
	case OutcomeDuplicate:
		q.dups.Inc()
	}
}

// waited records how long j's message waited in its queue before its
// handler started, from the timestamp its publisher set. Retry copies
// and copies waiting on a claim are left out: their wait is a delay
// tier's, by design.
func (q *queueMetrics) waited(j *job) {
	ts := j.bd.Timestamp
	if ts.IsZero() || j.d.Attempt != 1 || j.bd.Headers[HeaderInProgress] != nil {
		return
	}
	q.wait.Observe(max(time.Since(ts).Seconds(), 0))
}

// dlqOf is the dead-letter age of queue's route.
func (m *metrics) dlqOf(queue string) *dlqAge {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.dlqs[queue]
	if !ok {
		a = &dlqAge{gauge: m.dlqAge.WithLabelValues(queue)}
		m.dlqs[queue] = a
	}
	return a
}

// dlqAge follows how long a dead-letter queue has held messages: since
// the first dead letter this worker stored in it, or the first poll that
// found it holding some, until a poll finds it empty.
type dlqAge struct {
	mu    sync.Mutex
	since time.Time
	gauge prometheus.Gauge
}

func (a *dlqAge) deadLettered(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.since.IsZero() {
		a.since = now
	}
}

func (a *dlqAge) polled(ready int, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ready == 0 {
		a.since = time.Time{}
		a.gauge.Set(0)
		return
	}
	if a.since.IsZero() {
		a.since = now
	}
	a.gauge.Set(now.Sub(a.since).Seconds())
}

// runtimeCollectors expose the connection and publisher counters.
func runtimeCollectors(rt *runtime, w *Worker) []prometheus.Collector {
	stats := rt.pub.Stats()
	cs := []prometheus.Collector{
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
	if rt.store != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "warren_dedupe_store_up",
			Help: "1 while the dedupe store answers (its last call or ping reached it), 0 while it is unreachable."},
			func() float64 {
				if w.health.storeDown.Load() {
					return 0
				}
				return 1
			}))
	}
	return cs
}
