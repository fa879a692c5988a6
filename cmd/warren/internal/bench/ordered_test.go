package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/warrenmq/warren/cmd/warren/internal/bench"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestRouteOrderedNeedsPlugin: on a broker without the consistent-hash
// exchange plugin (a private node), route-ordered fails and says what to
// enable.
func TestRouteOrderedNeedsPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private RabbitMQ node (about 30s)")
	}
	rmq := testenv.StartPrivateRabbit(t)
	var out bytes.Buffer
	rep, err := bench.Run(context.Background(), bench.Options{
		AMQPURL: rmq.URL(), Rounds: 1, Messages: 10, Cases: []string{"route-ordered"}, Out: &out,
	})
	t.Logf("bench output:\n%s", out.String())
	if err == nil {
		t.Fatal("route-ordered passed on a broker without the plugin")
	}
	res := rep.Result("route-ordered")
	if res == nil || len(res.Errors) != 1 ||
		!strings.Contains(res.Errors[0].Error(), "enable the rabbitmq_consistent_hash_exchange plugin") {
		t.Fatalf("got %+v, want one error that says to enable the plugin", res)
	}
}
