package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// deadLetter publishes a dead letter the way a worker writes one.
func deadLetter(admin *testenv.Admin, q, id, body, errText string) {
	admin.Publish("", retry.DLQ(q), amqp.Publishing{
		MessageId: id,
		Body:      []byte(body),
		Headers: amqp.Table{
			retry.AttemptHeader:           int32(3),
			worker.HeaderError:            errText,
			worker.HeaderErrorKind:        worker.KindError,
			worker.HeaderDeadLetterReason: worker.KindExhausted,
			worker.HeaderQueue:            q,
			worker.HeaderHandler:          q,
			worker.HeaderAttempts:         int32(3),
			worker.HeaderOriginalExchange: "",
			worker.HeaderOriginalKey:      q,
			worker.HeaderFirstFailure:     "2024-01-01T00:00:00Z",
			"authorization":               "Bearer s3cr3tt0ken",
			worker.HeaderLastFailure:      "2024-01-01T00:00:01Z",
			"tenant":                      "acme", // the sender's own header survives a replay
		},
	})
}

// dlqCount reads the count of q's dead-letter queue from `dlq ls`.
func dlqCount(t *testing.T, e env, q string) string {
	t.Helper()
	r := mustWarren(t, e, "dlq", "ls", q)
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == retry.DLQ(q) {
			return f[1]
		}
	}
	t.Fatalf("dlq ls does not list %s\n%s", retry.DLQ(q), r)
	return ""
}

// TestE2EDLQ: ls, show (which puts everything back), replay with
// -dry-run, -limit and -grep into a running worker, and purge with and
// without confirmation.
func TestE2EDLQ(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	dlq := retry.DLQ(q)

	errs := map[string]string{"one": "db timeout after 5s", "two": "db timeout after 7s", "three": "invalid payload: no id"}
	for i, body := range []string{"one", "two", "three"} {
		deadLetter(admin, q, fmt.Sprintf("d%d", i+1), body, errs[body])
	}
	if got := dlqCount(t, e, q); got != "3" {
		t.Fatalf("dlq ls: %s messages, want 3", got)
	}
	if got := dlqCount(t, e, "missing-"+q); got != "missing" {
		t.Errorf("dlq ls of a queue without a DLQ: %q, want missing", got)
	}

	// show: two messages, with their error headers; all three stay.
	r := mustWarren(t, e, "dlq", "show", q, "-limit", "2")
	if n := strings.Count(r.stdout, "--- "); n != 2 {
		t.Errorf("dlq show -limit 2 printed %d messages\n%s", n, r)
	}
	if n := strings.Count(r.stdout, worker.HeaderError+": db timeout"); n != 2 {
		t.Errorf("dlq show printed %d %s headers of the first two\n%s", n, worker.HeaderError, r)
	}
	if strings.Contains(r.stdout, "invalid payload") || !strings.Contains(r.stdout, "body: one") {
		t.Errorf("dlq show -limit 2 should show one and two only\n%s", r)
	}
	if strings.Contains(r.stdout, "s3cr3tt0ken") || !strings.Contains(r.stdout, "authorization: (hidden: 18 bytes)") {
		t.Errorf("dlq show prints a credential header's value, or not that it is hidden\n%s", r)
	}
	if n := admin.Count(dlq); n != 3 {
		t.Fatalf("after dlq show %s holds %d, want 3", dlq, n)
	}

	// replay -dry-run changes nothing.
	r = mustWarren(t, e, "dlq", "replay", q, "-dry-run")
	if n := strings.Count(r.stdout, "would replay d"); n != 3 || !strings.Contains(r.stdout, "would replay 3 messages") {
		t.Errorf("dry run\n%s", r)
	}
	if n := admin.Count(dlq); n != 3 {
		t.Fatalf("after a dry run %s holds %d, want 3", dlq, n)
	}
	if n := admin.Count(q); n != 0 {
		t.Fatalf("after a dry run %s holds %d, want 0", q, n)
	}

	// A worker that now succeeds, logging what it sees.
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
printf '%%s %%s [%%s] [%%s] %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" "$WARREN_MSG_HEADER_WARREN_ERROR" "$WARREN_MSG_HEADER_TENANT" "$body" >> '%s'
`, log))
	w := startRun(t, e, "-queue", q, "-exec", script)

	// replay -limit 2 moves two back; the worker handles them as new.
	r = mustWarren(t, e, "dlq", "replay", q, "-limit", "2")
	if !strings.Contains(r.stdout, "replayed 2 messages") {
		t.Errorf("replay -limit 2\n%s", r)
	}
	if n := admin.Count(dlq); n != 1 {
		t.Fatalf("after replay -limit 2 %s holds %d, want 1", dlq, n)
	}
	waitFor(t, settleWait, "the worker to handle the two replayed messages", func() bool { return log.count() >= 2 })
	stays(t, quietWindow, "handled", 2, log.count)
	handled := map[string]bool{}
	for _, l := range log.lines() {
		f := strings.Fields(l)
		body := f[len(f)-1]
		id := map[string]string{"one": "d1", "two": "d2", "three": "d3"}[body]
		if want := id + " 1 [] [acme] " + body; l != want {
			t.Errorf("handled %q, want %q: same id, attempt 1, no failure headers, own headers kept", l, want)
		}
		handled[body] = true
	}
	left := ""
	for _, b := range []string{"one", "two", "three"} {
		if !handled[b] {
			left = b
		}
	}
	if len(handled) != 2 || left == "" {
		t.Fatalf("handled %v, want two distinct messages", handled)
	}

	// Two more dead letters; then -grep replays only the matching one.
	deadLetter(admin, q, "d4", "four", "db timeout after 9s")
	deadLetter(admin, q, "d5", "five", "quota exceeded")
	r = mustWarren(t, e, "dlq", "replay", q, "-grep", "no such error text")
	if !strings.Contains(r.stdout, "replayed 0 messages") || !strings.Contains(r.stdout, "(3 skipped by -grep)") {
		t.Errorf("replay -grep without a match\n%s", r)
	}
	if n := admin.Count(dlq); n != 3 {
		t.Fatalf("after a grep without a match %s holds %d, want 3", dlq, n)
	}
	r = mustWarren(t, e, "dlq", "replay", q, "-grep", "quota")
	if !strings.Contains(r.stdout, "replayed 1 messages") || !strings.Contains(r.stdout, "(2 skipped by -grep)") {
		t.Errorf("replay -grep quota\n%s", r)
	}
	waitFor(t, settleWait, "the worker to handle five", func() bool { return log.has("d5 1 [] [acme] five") == 1 })
	stays(t, quietWindow, "handled", 3, log.count)
	if n := admin.Count(dlq); n != 2 {
		t.Fatalf("after replay -grep %s holds %d, want 2", dlq, n)
	}

	// purge: "n" deletes nothing; -yes deletes everything.
	r = warren(t, e, strings.NewReader("n\n"), "dlq", "purge", q)
	if r.code == 0 || !strings.Contains(r.stderr, "nothing deleted") || !strings.Contains(r.stdout, "delete all 2 messages of "+dlq) {
		t.Errorf("purge answered n\n%s", r)
	}
	if n := admin.Count(dlq); n != 2 {
		t.Fatalf("after an unconfirmed purge %s holds %d, want 2", dlq, n)
	}
	r = mustWarren(t, e, "dlq", "purge", q, "-yes")
	if !strings.Contains(r.stdout, "purged 2 messages from "+dlq) {
		t.Errorf("purge -yes\n%s", r)
	}
	if n := admin.Count(dlq); n != 0 {
		t.Fatalf("after purge -yes %s holds %d, want 0", dlq, n)
	}
	if got := dlqCount(t, e, q); got != "0" {
		t.Errorf("dlq ls %s after purge: %s", q, got)
	}
	w.stop()
}

// TestE2EDLQManagement: `dlq ls -management-url` lists every .dlq the
// management API knows, authenticating with the URL's user, and never
// prints the password.
func TestE2EDLQManagement(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	deadLetter(admin, q, "d1", "one", "boom")
	deadLetter(admin, q, "d2", "two", "boom")
	gone := testenv.Name(t) + ".dlq"
	var (
		mu    sync.Mutex
		auths []string
	)
	api := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		user, pw, _ := r.BasicAuth()
		mu.Lock()
		auths = append(auths, user+":"+pw)
		mu.Unlock()
		if user != "ops" || pw != "s3cr3tpassw0rd" {
			http.Error(rw, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.EscapedPath() != "/api/queues/%2F" { // the worker's vhost only
			http.NotFound(rw, r)
			return
		}
		fmt.Fprintf(rw, `[{"name":%q},{"name":%q},{"name":%q},{"name":"some.other.queue"}]`, q, retry.DLQ(q), gone)
	}))
	t.Cleanup(api.Close)
	u := strings.Replace(api.URL, "http://", "http://ops:s3cr3tpassw0rd@", 1)

	r := mustWarren(t, e, "dlq", "ls", "-management-url", u)
	rows := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n")[1:] {
		if f := strings.Fields(line); len(f) == 2 {
			rows[f[0]] = f[1]
		}
	}
	if rows[retry.DLQ(q)] != "2" || rows[gone] != "missing" || len(rows) != 2 {
		t.Errorf("want %s 2 and %s missing only\n%s", retry.DLQ(q), gone, r)
	}
	mu.Lock()
	if len(auths) != 1 || auths[0] != "ops:s3cr3tpassw0rd" {
		t.Errorf("basic auth sent: %v", auths)
	}
	mu.Unlock()

	// WARREN_MANAGEMENT_URL is the default; a refused login is an error
	// that names the status but not the password.
	bad := strings.Replace(api.URL, "http://", "http://ops:wr0ngpassw0rd@", 1)
	r = warren(t, e.with("WARREN_MANAGEMENT_URL", bad), nil, "dlq", "ls")
	if r.code == 0 || !strings.Contains(r.stderr, "401") || !strings.Contains(r.stderr, "ops:xxxxx@") {
		t.Errorf("want a non-zero exit naming 401 and the redacted URL\n%s", r)
	}
}

// TestE2EDLQReplayKeepsProperties: a replayed dead letter keeps its body
// and properties, an empty message id included, and loses only the
// failure headers.
func TestE2EDLQReplayKeepsProperties(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	admin.Publish("", retry.DLQ(q), amqp.Publishing{
		Body: []byte("no id"), ContentType: "text/plain", CorrelationId: "c-7", Type: "order.created",
		Headers: amqp.Table{worker.HeaderError: "boom", retry.AttemptHeader: int32(3), worker.HeaderDeadLetterReason: worker.KindExhausted, "tenant": "acme"},
	})
	r := mustWarren(t, e, "dlq", "replay", q)
	if !strings.Contains(r.stdout, "replayed 1 messages") {
		t.Fatalf("replay\n%s", r)
	}
	d, ok := admin.Get(q)
	if !ok {
		t.Fatalf("nothing replayed into %s", q)
	}
	if string(d.Body) != "no id" || d.ContentType != "text/plain" || d.CorrelationId != "c-7" || d.Type != "order.created" {
		t.Errorf("replayed message changed: body %q content type %q correlation %q type %q", d.Body, d.ContentType, d.CorrelationId, d.Type)
	}
	if len(d.Headers) != 1 || d.Headers["tenant"] != "acme" {
		t.Errorf("replayed headers %v, want only tenant=acme", d.Headers)
	}
	if d.MessageId != "" {
		t.Errorf("replay gave a message without an id the id %q; a replay should keep the message as it was (the worker's dedupe key of a message without id is its body hash)", d.MessageId)
	}
}
