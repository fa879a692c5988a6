package worker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/warrenmq/warren/retry"
)

// SettleOnFakes runs one message with body on the given attempt through a
// route's whole pipeline, on fakes of the broker, and reports what the
// pipeline did with it as a Decision: the outcome from how the message
// was settled and where its copy went, the kind and reason from the
// copy's headers. The tests of workertest's agreement with the worker
// use it.
func SettleOnFakes(t *testing.T, h Handler, body []byte, attempt int, p retry.Policy, timeout time.Duration) Decision {
	t.Helper()
	r := newRig(t, rigOptions{handler: h, concurrency: 1, policy: p, timeout: timeout})
	r.start()
	tag := r.deliverBody("m1", body, retry.SetAttempt(map[string]any{}, attempt))
	r.acks.waitSettled(t, 1)
	r.close()
	if r.acks.result(tag) == "" {
		t.Fatal("the message was not settled")
	}
	var d Decision
	for _, o := range []Outcome{OutcomeAck, OutcomeRetry, OutcomeDeadLetter, OutcomeDuplicate, OutcomeDiscard, OutcomeRequeue} {
		if testutil.ToFloat64(r.m.messages.WithLabelValues("q", string(o))) == 1 {
			d.Outcome = o
		}
	}
	copies := r.copies.queues()
	if len(copies) == 0 {
		return d
	}
	m := r.copies.messages[0]
	d.Kind, _ = m.Headers[HeaderErrorKind].(string)
	d.Reason, _ = m.Headers[HeaderDeadLetterReason].(string)
	for _, delay := range r.route.Retry.Delays {
		if retry.TierQueue("q", delay) == copies[0] {
			d.Delay = delay
		}
	}
	return d
}
