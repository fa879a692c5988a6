package main

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// planStates parses `topology plan` output into name -> state and
// name -> whole line.
func planStates(out string) (map[string]string, map[string]string) {
	states, lines := map[string]string{}, map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] == "KIND" {
			continue
		}
		if f[0] == "binding" {
			// binding X -> Q (key)  declared on apply
			states["binding"] = strings.TrimSpace(line[strings.LastIndex(line, ")")+1:])
			lines["binding"] = line
			continue
		}
		states[f[1]], lines[f[1]] = f[2], line
	}
	return states, lines
}

func routeQueues(q string) []string {
	return []string{q, retry.TierQueue(q, tier1), retry.TierQueue(q, tier2), retry.DLQ(q)}
}

// TestE2ETopology: plan reports missing entities and changes nothing;
// apply declares them and plan then reports ok; a tier queue declared
// with another x-message-ttl makes plan exit non-zero with "differs".
func TestE2ETopology(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	e := baseEnv()

	t.Run("missing then applied", func(t *testing.T) {
		t.Parallel()
		q := queueNames(t, admin)
		r := mustWarren(t, e, "topology", "plan", "-queue", q)
		states, _ := planStates(r.stdout)
		for _, name := range routeQueues(q) {
			if states[name] != "missing" {
				t.Errorf("plan on a fresh queue: %s is %q, want missing\n%s", name, states[name], r)
			}
			if queueExists(t, name) {
				t.Errorf("plan created %s", name)
			}
		}
		r = mustWarren(t, e, "topology", "apply", "-queue", q)
		if !strings.Contains(r.stdout, "applied") {
			t.Errorf("apply\n%s", r)
		}
		r = mustWarren(t, e, "topology", "plan", "-queue", q)
		states, _ = planStates(r.stdout)
		if len(states) != 4 {
			t.Errorf("plan lists %d entities, want 4\n%s", len(states), r)
		}
		for _, name := range routeQueues(q) {
			if states[name] != "ok" {
				t.Errorf("plan after apply: %s is %q, want ok\n%s", name, states[name], r)
			}
		}
		// Apply again is a no-op.
		mustWarren(t, e, "topology", "apply", "-queue", q)
	})

	t.Run("drift", func(t *testing.T) {
		t.Parallel()
		q := queueNames(t, admin)
		tier := retry.TierQueue(q, tier2)
		// The tier queue as an older deployment left it: another TTL.
		declare(t, tier, amqp.Table{"x-message-ttl": int64(999), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
		r := warren(t, e, nil, "topology", "plan", "-queue", q)
		if r.code == 0 {
			t.Errorf("plan with drift exited 0\n%s", r)
		}
		states, lines := planStates(r.stdout)
		if states[tier] != "differs" || !strings.Contains(lines[tier], "x-message-ttl") {
			t.Errorf("plan: %s is %q (%s), want differs naming x-message-ttl\n%s", tier, states[tier], lines[tier], r)
		}
		for _, name := range []string{q, retry.TierQueue(q, tier1), retry.DLQ(q)} {
			if states[name] != "missing" {
				t.Errorf("plan: %s is %q, want missing\n%s", name, states[name], r)
			}
		}
		if !strings.Contains(r.stderr, "1 entities differ") {
			t.Errorf("plan: stderr should count the differences\n%s", r)
		}
		// apply refuses to paper over the drift.
		r = warren(t, e, nil, "topology", "apply", "-queue", q)
		if r.code == 0 || !strings.Contains(r.stderr, "x-message-ttl") {
			t.Errorf("apply over drift: want a non-zero exit naming x-message-ttl\n%s", r)
		}
	})

	t.Run("exchange and binding", func(t *testing.T) {
		t.Parallel()
		q := queueNames(t, admin)
		x := testenv.Name(t) + "-x"
		admin.DeleteExchanges(x)
		args := []string{"-queue", q, "-exchange", x, "-exchange-kind", "direct", "-binding-key", "k1", "-binding-key", "k2"}
		r := mustWarren(t, e, append([]string{"topology", "plan"}, args...)...)
		states, _ := planStates(r.stdout)
		if states[x] != "missing" || states["binding"] != "declared on apply" {
			t.Errorf("plan with an exchange\n%s", r)
		}
		mustWarren(t, e, append([]string{"topology", "apply"}, args...)...)
		r = mustWarren(t, e, append([]string{"topology", "plan"}, args...)...)
		states, _ = planStates(r.stdout)
		if states[x] != "ok" || states[q] != "ok" {
			t.Errorf("plan after apply\n%s", r)
		}
		for _, k := range []string{"k1", "k2"} {
			mustWarren(t, e, "publish", "-exchange", x, "-routing-key", k, "via-"+k)
		}
		if n := admin.Count(q); n != 2 {
			t.Errorf("%s got %d messages through both bindings, want 2", q, n)
		}
		// A different kind is drift on the exchange.
		r = warren(t, e, nil, "topology", "plan", "-queue", q, "-exchange", x, "-exchange-kind", "fanout")
		states, _ = planStates(r.stdout)
		if r.code == 0 || states[x] != "differs" {
			t.Errorf("plan with another exchange kind: want differs and a non-zero exit\n%s", r)
		}
	})

	t.Run("usage", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"topology"}, {"topology", "show"}, {"topology", "plan"}} {
			if r := warren(t, e, nil, args...); r.code == 0 {
				t.Errorf("want a non-zero exit\n%s", r)
			}
		}
	})
}

// declare declares a durable classic queue with args, deleted at the end.
func declare(t *testing.T, name string, args amqp.Table) {
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
	defer ch.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
}
