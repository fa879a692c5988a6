package dlq_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/dlq"
	"github.com/warrenmq/warren/internal/redact"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestOverviewManagement: routes by name and by prefix gather their
// queue, tiers (in delay order) and DLQ from the management API, which is
// asked with the URL's credentials; a refused login names the status but
// not the password.
func TestOverviewManagement(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, _ := r.BasicAuth(); u != "ops" || p != "s3cret-pw" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var b strings.Builder
		b.WriteString("[")
		for i, q := range []string{"orders", "orders.retry.10s", "orders.retry.1s", "orders.dlq", "pay.a", "pay.a.dlq", "pay.b.dlq", "other", "orders2"} {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"name":%q,"messages_ready":%d,"messages_unacknowledged":%d,"consumers":1,"message_stats":{"publish_details":{"rate":2.5}}}`, q, i, 10*i)
		}
		b.WriteString("]")
		_, _ = w.Write([]byte(b.String()))
	}))
	defer api.Close()
	m := &dlq.Management{URL: strings.Replace(api.URL, "http://", "http://ops:s3cret-pw@", 1)}
	routes, err := dlq.Overview(context.Background(), nil, m, []string{"orders", "pay.*"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 3 {
		t.Fatalf("routes %+v, want orders, pay.a, pay.b", routes)
	}
	o := routes[0]
	if o.Queue.Name != "orders" || o.DLQ.Ready != 3 || o.DLQ.Unacked != 30 || !o.DLQ.Detailed || o.Queue.PublishRate != 2.5 {
		t.Errorf("orders: %+v", o)
	}
	if len(o.Tiers) != 2 || o.Tiers[0].Name != "orders.retry.1s" || o.Tiers[1].Name != "orders.retry.10s" {
		t.Errorf("orders tiers %+v", o.Tiers)
	}
	if b := routes[2]; b.Queue.Name != "pay.b" || !b.Queue.Missing || b.DLQ.Missing {
		t.Errorf("pay.b: %+v", b)
	}
	if _, err := dlq.Overview(context.Background(), nil, nil, []string{"pay.*"}, nil); err == nil || !strings.Contains(err.Error(), "WARREN_MANAGEMENT_URL") {
		t.Errorf("a prefix without the management API: %v", err)
	}
	bad := &dlq.Management{URL: strings.Replace(api.URL, "http://", "http://ops:wrong-pw@", 1)}
	_, err = bad.Queues(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("refused login: %v", err)
	}
}

// TestOverviewRealManagement asks the broker's own management API
// (rabbitmq_management, which scripts/services.sh enables) about a route
// with dead letters: the counts it reports are the queues'.
func TestOverviewRealManagement(t *testing.T) {
	url := os.Getenv("WARREN_TEST_MANAGEMENT_URL")
	if url == "" {
		url = "http://guest:guest@127.0.0.1:15672"
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections() // no keep-alive left for goleak
	m := &dlq.Management{URL: url, Vhost: "/", Client: &http.Client{Transport: tr, Timeout: 15 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.Queues(ctx); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the management API does not answer in CI (scripts/services.sh enables it): %v", err)
		}
		t.Skipf("no management API at %s: %v", redact.URL(url), err)
	}
	a := testenv.NewAdmin(t)
	q := testenv.Name(t)
	a.DeleteQueues(q, q+".dlq")
	a.DeclareQueue(q)
	a.DeclareQueue(q + ".dlq")
	for i := range 3 {
		a.Publish("", q+".dlq", amqp.Publishing{Body: []byte(fmt.Sprint("dead ", i))})
	}
	// The management API's figures lag the queue by up to its stats
	// interval (5s by default): wait for them.
	deadline := time.Now().Add(30 * time.Second)
	for {
		routes, err := dlq.Overview(ctx, nil, m, []string{q}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) == 1 && routes[0].DLQ.Ready == 3 && routes[0].DLQ.Detailed && !routes[0].Queue.Missing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("overview %+v, want the route with 3 dead letters ready", routes)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestManagementVhost: with a vhost, only its queues are asked for (the
// API lists every vhost's queues otherwise, and same-named queues of
// another vhost would mix with the worker's).
func TestManagementVhost(t *testing.T) {
	var paths []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.EscapedPath())
		_, _ = w.Write([]byte(`[{"name":"a.dlq"}]`))
	}))
	defer api.Close()
	for _, c := range []struct{ vhost, path string }{{"", "/api/queues"}, {"/", "/api/queues/%2F"}, {"prod/eu", "/api/queues/prod%2Feu"}} {
		paths = nil
		names, err := (dlq.Management{URL: api.URL, Vhost: c.vhost}).DLQs(context.Background())
		if err != nil || len(names) != 1 {
			t.Fatalf("vhost %q: %v %v", c.vhost, names, err)
		}
		if len(paths) != 1 || paths[0] != c.path {
			t.Errorf("vhost %q asked for %v, want %s", c.vhost, paths, c.path)
		}
	}
}
