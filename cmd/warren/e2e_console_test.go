package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

const (
	consoleToken = "t0ken-for-the-console-e2e"
	browserWait  = 90 * time.Second
)

// startConsole starts `warren console` on a free port and returns it
// with its base URL once it listens.
func startConsole(t *testing.T, e env, args ...string) (*proc, string) {
	t.Helper()
	p := startWarren(t, e, append([]string{"console", "-addr", "127.0.0.1:0"}, args...)...)
	re := regexp.MustCompile(`warren console on (http://127\.0\.0\.1:\d+)`)
	var base string
	waitFor(t, readyWait, "the console to listen", func() bool {
		if p.exited() {
			t.Fatalf("warren console exited with %d\n%s", p.code, p.stderr)
		}
		m := re.FindStringSubmatch(p.stdout.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})
	return p, base
}

// browser starts headless Chromium for the test; it is closed at cleanup.
func browser(t *testing.T, headers network.Headers) context.Context {
	t.Helper()
	bin := os.Getenv("WARREN_CHROMIUM")
	if bin == "" {
		bin = "/usr/bin/chromium"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the console's browser tests need Chromium at %s: run scripts/chromium.sh (%v)", bin, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	if headers != nil {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: headers}); err != nil {
			t.Fatal(err)
		}
	}
	return ctx
}

// run runs browser steps with a deadline.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// value runs one browser action that returns a value, with a deadline.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// postStatus POSTs form fields from the page with fetch and returns the
// status (0 for a redirect, which fetch does not follow here).
func postStatus(t *testing.T, ctx context.Context, path, body string) int {
	t.Helper()
	js := `fetch(` + jsString(path) + `, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: ` + jsString(body) + `, redirect: "manual"}).then(r => r.status)`
	return value(t, ctx, "POST "+path, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// deadLetterKind publishes a dead letter with an error kind and a last
// failure time.
func deadLetterKind(admin *testenv.Admin, q, id, body, errText, kind string) {
	admin.Publish("", retry.DLQ(q), amqp.Publishing{
		MessageId: id, Body: []byte(body), ContentType: "application/json",
		Headers: amqp.Table{
			retry.AttemptHeader: int32(3), worker.HeaderError: errText, worker.HeaderErrorKind: kind,
			worker.HeaderDeadLetterReason: worker.KindExhausted, worker.HeaderQueue: q,
			worker.HeaderOriginalExchange: "", worker.HeaderOriginalKey: q,
			worker.HeaderFirstFailure: "2026-01-01T00:00:00Z", worker.HeaderLastFailure: "2026-01-01T00:00:05Z",
			"tenant": "acme", "callback": "https://hook:s3cr3tpassw0rd@example.com/cb",
			"Authorization": "Bearer s3cr3tt0ken", "x-api-key": []byte("s3cr3tk3y"),
		},
	})
}

// httpDo sends a request without following redirects and returns the
// status and headers of the answer.
func httpDo(t *testing.T, method, url string, header http.Header) (int, http.Header) {
	t.Helper()
	return httpDoHost(t, method, url, "", header)
}

// httpDoHost is httpDo with a Host of the test's choice ("": the URL's).
func httpDoHost(t *testing.T, method, url, host string, header http.Header) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	if host != "" {
		req.Host = host
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("WARREN_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := value(t, ctx, "screenshot", chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestE2EConsoleBrowser: a real browser signs in with the token, sees
// the dead letters grouped by cause, opens one, dry-runs and replays a
// group, and sees the DLQ drain while the messages arrive in the queue;
// a POST without the CSRF token is refused; no secret shows.
func TestE2EConsoleBrowser(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	dlq := retry.DLQ(q)
	for _, s := range []string{"5", "7", "11"} {
		deadLetterKind(admin, q, "t"+s, `{"order":"o-`+s+`"}`, "db timeout after "+s+"s on 10.0.0.7:5432", worker.KindTimeout)
	}
	deadLetterKind(admin, q, "p1", "not json", "invalid payload: no id", worker.KindPermanent)

	_, base := startConsole(t, e.with("WARREN_CONSOLE_TOKEN", consoleToken), q)

	// Without a session: pages lead to the login, POSTs are refused.
	if code, h := httpDo(t, "GET", base+"/groups", nil); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Errorf("GET /groups without auth: %d to %q, want 303 to /login", code, h.Get("Location"))
	}
	if code, _ := httpDo(t, "POST", base+"/replay", nil); code != http.StatusUnauthorized {
		t.Errorf("POST /replay without auth: %d, want 401", code)
	}

	ctx := browser(t, nil)
	run(t, ctx, "sign in", chromedp.Navigate(base+"/groups"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), consoleToken), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS("header nav")))
	groups := waitGroups(t, ctx, base, func(s string) bool { return strings.HasPrefix(s, "4 dead letters in 2 groups") })
	if !strings.Contains(groups, "3\ttimeout\tdb timeout after <n> on <addr>") || !strings.Contains(groups, "1\tpermanent\tinvalid payload: no id") {
		t.Fatalf("groups table:\n%s", groups)
	}
	screenshot(t, ctx, "groups.png")

	// One message: properties, failure headers, JSON body; the URL in a
	// header shows without its password.
	timeoutRow := chromedp.Search(`//tr[td[2]="timeout"]`)
	run(t, ctx, "open a message", chromedp.Click(timeoutRow+`//a`),
		chromedp.WaitVisible(chromedp.ID("messages")), chromedp.Click(chromedp.CSS("#messages tbody a")),
		chromedp.WaitVisible(chromedp.ID("body")))
	errText := value(t, ctx, "error text", chromedp.Text(chromedp.ID("error-text")))
	body := value(t, ctx, "body", chromedp.Text(chromedp.ID("body")))
	page := value(t, ctx, "page", chromedp.OuterHTML(chromedp.CSS("html")))
	if !strings.HasPrefix(errText, "db timeout after ") || !strings.Contains(body, `"order": "o-`) {
		t.Errorf("message page: error %q body %q", errText, body)
	}
	if strings.Contains(page, "s3cr3tpassw0rd") || !strings.Contains(page, "hook:xxxxx@example.com") {
		t.Errorf("the message page shows a password, or not the redacted URL")
	}
	if strings.Contains(page, "s3cr3tt0ken") || strings.Contains(page, "s3cr3tk3y") || !strings.Contains(page, "(hidden: 18 bytes)") || !strings.Contains(page, "(hidden: 9 bytes)") {
		t.Errorf("the message page shows a credential header's value, or not that it is hidden")
	}
	screenshot(t, ctx, "message.png")

	// A POST with the session but without the CSRF token is refused.
	if s := postStatus(t, ctx, "/replay", "scope=filter"); s != http.StatusForbidden {
		t.Errorf("POST /replay without a CSRF token: %d, want 403", s)
	}
	if n := admin.Count(dlq); n != 4 {
		t.Fatalf("after a refused POST %s holds %d, want 4", dlq, n)
	}

	// Dry run of the timeout group: listed, nothing moves.
	run(t, ctx, "dry run", chromedp.Navigate(base+"/groups"), chromedp.WaitVisible(chromedp.ID("groups")),
		chromedp.Click(timeoutRow+`//input[@name="dry_run"]`), chromedp.Click(timeoutRow+`//button`),
		chromedp.WaitVisible(chromedp.CSS(`#job[data-done="true"] #planned`)))
	moved := value(t, ctx, "moved", chromedp.Text(chromedp.ID("moved")))
	if moved != "3" || admin.Count(dlq) != 4 || admin.Count(q) != 0 {
		t.Fatalf("dry run: %s would move; DLQ %d, queue %d; want 3, 4, 0", moved, admin.Count(dlq), admin.Count(q))
	}
	screenshot(t, ctx, "dryrun.png")

	// Replay the group for real: the DLQ drains by 3, the queue gets them.
	run(t, ctx, "replay", chromedp.Navigate(base+"/groups"), chromedp.WaitVisible(chromedp.ID("groups")),
		chromedp.Click(timeoutRow+`//button`), chromedp.WaitVisible(chromedp.CSS(`#job[data-done="true"]`)))
	if moved := value(t, ctx, "moved", chromedp.Text(chromedp.ID("moved"))); moved != "3" {
		t.Errorf("replay moved %q, want 3", moved)
	}
	if n := admin.WaitCount(q, 3, settleWait); n != 3 {
		t.Fatalf("%s holds %d after the replay, want 3", q, n)
	}
	// (the console's rescan after the replay may hold the rest unacked
	// for a moment)
	if n := admin.WaitCount(dlq, 1, settleWait); n != 1 {
		t.Fatalf("%s holds %d after the replay, want 1", dlq, n)
	}
	d, _ := admin.Get(q)
	if _, has := d.Headers[worker.HeaderError]; has || d.Headers["tenant"] != "acme" || !strings.HasPrefix(d.MessageId, "t") {
		t.Errorf("replayed message %s headers %v", d.MessageId, d.Headers)
	}
	// The index follows: only the permanent group is left.
	waitGroups(t, ctx, base, func(s string) bool { return strings.HasPrefix(s, "1 dead letters in 1 groups") })
}

// waitGroups reloads the group page until its summary satisfies ok, and
// returns the groups table.
func waitGroups(t *testing.T, ctx context.Context, base string, ok func(summary string) bool) string {
	t.Helper()
	summary := ""
	waitFor(t, settleWait, "the group page's summary", func() bool {
		run(t, ctx, "groups", chromedp.Navigate(base+"/groups"), chromedp.WaitVisible(chromedp.CSS("#index-status")))
		if n := value(t, ctx, "summary?", chromedp.Evaluate[int](`document.querySelectorAll("#summary").length`)); n == 0 {
			return false
		}
		summary = value(t, ctx, "summary", chromedp.Text(chromedp.ID("summary")))
		return ok(summary)
	})
	return value(t, ctx, "groups", chromedp.Text(chromedp.ID("groups")))
}

// TestE2EConsoleReadOnlyBasicAuth: the console refuses to start without
// access control; basic auth is required (a wrong password is refused);
// a read-only console refuses replays and purges even with a valid CSRF
// token, while dry runs pass.
func TestE2EConsoleReadOnlyBasicAuth(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	deadLetterKind(admin, q, "a1", `{}`, "boom 1", worker.KindError)
	deadLetterKind(admin, q, "a2", `{}`, "boom 2", worker.KindError)

	r := warren(t, e, nil, "console", "-addr", "127.0.0.1:0", q)
	if r.code == 0 || !strings.Contains(r.stderr, "WARREN_CONSOLE_TOKEN") {
		t.Errorf("console without auth\n%s", r)
	}

	ce := e.with("WARREN_CONSOLE_USER", "ops", "WARREN_CONSOLE_PASSWORD", "wr0ngpassw0rd-is-right")
	_, base := startConsole(t, ce, "-read-only", q)
	if code, h := httpDo(t, "GET", base+"/", nil); code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("GET / without auth: %d %q", code, h.Get("WWW-Authenticate"))
	}
	bad := http.Header{"Authorization": {"Basic b3BzOm5vcGU="}} // ops:nope
	if code, _ := httpDo(t, "GET", base+"/", bad); code != http.StatusUnauthorized {
		t.Errorf("GET / with a wrong password: %d", code)
	}

	ctx := browser(t, network.Headers{"Authorization": "Basic b3BzOndyMG5ncGFzc3cwcmQtaXMtcmlnaHQ="}) // ops:wr0ngpassw0rd-is-right
	run(t, ctx, "overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("read-only")))
	screenshot(t, ctx, "overview.png")
	if who := value(t, ctx, "who", chromedp.Text(chromedp.CSS(".who"))); !strings.Contains(who, "signed in as ops") {
		t.Errorf("header says %q", who)
	}
	if n := value(t, ctx, "purge forms", chromedp.Evaluate[int](`document.querySelectorAll("form[action='/purge']").length`)); n != 0 {
		t.Errorf("a read-only console shows %d purge forms", n)
	}
	waitGroups(t, ctx, base, func(s string) bool { return strings.HasPrefix(s, "2 dead letters") })
	csrf := value(t, ctx, "csrf", chromedp.Value(chromedp.CSS("input[name=csrf]")))
	if s := postStatus(t, ctx, "/replay", "scope=filter&csrf="+csrf); s != http.StatusForbidden {
		t.Errorf("read-only replay: %d, want 403", s)
	}
	if s := postStatus(t, ctx, "/purge", "queue="+q+"&confirm="+retry.DLQ(q)+"&csrf="+csrf); s != http.StatusForbidden {
		t.Errorf("read-only purge: %d, want 403", s)
	}
	if s := postStatus(t, ctx, "/replay", "scope=filter&dry_run=1&csrf="+csrf); s != 0 {
		t.Errorf("read-only dry run: %d, want a redirect to its job (0 to fetch)", s)
	}
	// The dry run reads the DLQ, holding its letters unacked while it
	// does; then every letter is back.
	if n := admin.WaitCount(retry.DLQ(q), 2, settleWait); n != 2 {
		t.Errorf("the read-only console changed %s: %d left, want 2", retry.DLQ(q), n)
	}
}

// TestE2EConsoleOverviewGroupsPurge: 50 dead letters from two causes show
// in the overview's counts and as two groups; a purge needs its
// confirmation (a wrong one changes nothing) and then empties the DLQ.
func TestE2EConsoleOverviewGroupsPurge(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)
	dlq := retry.DLQ(q)
	for i := range 50 {
		if i%5 < 3 { // 30
			deadLetterKind(admin, q, fmt.Sprint("c", i), `{}`, fmt.Sprintf("card %d declined by gateway 10.1.%d.9", 4000+i, i), worker.KindError)
		} else { // 20
			deadLetterKind(admin, q, fmt.Sprint("s", i), `{}`, fmt.Sprintf("schema: field amount missing in order o-%d", i), worker.KindPermanent)
		}
	}
	if n := admin.WaitCount(dlq, 50, settleWait); n != 50 {
		t.Fatalf("%s holds %d, want 50", dlq, n)
	}
	_, base := startConsole(t, e.with("WARREN_CONSOLE_TOKEN", consoleToken), q)
	ctx := browser(t, nil)
	run(t, ctx, "sign in", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), consoleToken), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS("header nav")))

	// The overview: the queue, its tier and its DLQ with 50 ready.
	dlqRow := chromedp.Search(`//tr[th="` + dlq + `"]`)
	run(t, ctx, "overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(dlqRow))
	row := value(t, ctx, "dlq row", chromedp.Text(dlqRow))
	if f := strings.Fields(row); len(f) < 2 || f[0] != dlq || f[1] != "50" {
		t.Fatalf("overview row of %s: %q, want 50 ready", dlq, row)
	}
	screenshot(t, ctx, "overview-50.png")

	groups := waitGroups(t, ctx, base, func(s string) bool { return strings.HasPrefix(s, "50 dead letters in 2 groups") })
	if !strings.Contains(groups, "30\terror\tcard <n> declined by gateway <addr>") ||
		!strings.Contains(groups, "20\tpermanent\tschema: field amount missing in order <id>") {
		t.Fatalf("groups table:\n%s", groups)
	}
	screenshot(t, ctx, "groups-50.png")

	// Purge with a wrong confirmation: refused, nothing deleted.
	run(t, ctx, "open purge", chromedp.Navigate(base+"/"), chromedp.WaitVisible(dlqRow))
	csrf := value(t, ctx, "csrf", chromedp.Value(chromedp.CSS("form[action='/purge'] input[name=csrf]")))
	if s := postStatus(t, ctx, "/purge", "queue="+dlq+"&confirm="+q+"&csrf="+csrf); s != http.StatusBadRequest {
		t.Errorf("purge with a wrong confirmation: %d, want 400", s)
	}
	if n := admin.WaitCount(dlq, 50, settleWait); n != 50 {
		t.Fatalf("after a refused purge %s holds %d, want 50", dlq, n)
	}
	// With the confirmation typed in the page's own form: emptied.
	run(t, ctx, "purge", chromedp.Click(chromedp.CSS("details summary")),
		chromedp.SendKeys(chromedp.CSS("form[action='/purge'] input[name=confirm]"), dlq),
		chromedp.Click(chromedp.CSS("form[action='/purge'] button")),
		chromedp.WaitVisible(chromedp.CSS(`#job[data-done="true"]`)))
	if moved := value(t, ctx, "purged", chromedp.Text(chromedp.ID("moved"))); moved != "50" {
		t.Errorf("purge reports %q, want 50", moved)
	}
	if progress := value(t, ctx, "purge progress", chromedp.Text(chromedp.ID("progress"))); !strings.Contains(progress, "50 purged") {
		t.Errorf("purge progress reads %q, want it to say 50 purged", progress)
	}
	if n := admin.WaitCount(dlq, 0, settleWait); n != 0 {
		t.Fatalf("after the purge %s holds %d, want 0", dlq, n)
	}
	screenshot(t, ctx, "purged.png")
}

// TestE2EConsoleRefusesForeignRequests: without authentication, on a
// loopback address, the console answers only to loopback host names (a
// site rebinding its own name to 127.0.0.1 gets nothing); with
// authentication, a background request from another site (the browser
// would add its saved basic-auth credentials) is refused, while a link
// followed from elsewhere and a plain client pass.
func TestE2EConsoleRefusesForeignRequests(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	e := baseEnv()
	mustWarren(t, e, "topology", "apply", "-queue", q)

	_, open := startConsole(t, e, "-insecure-no-auth", q)
	port := open[strings.LastIndex(open, ":")+1:]
	for host, want := range map[string]int{"": http.StatusOK, "localhost:" + port: http.StatusOK, "LOCALHOST.:" + port: http.StatusOK,
		"app.localhost:" + port: http.StatusOK, "[::1]:" + port: http.StatusOK, "127.0.0.2": http.StatusOK,
		"rebind.example:" + port: http.StatusMisdirectedRequest, "10.1.2.3": http.StatusMisdirectedRequest,
		"localhost.rebind.example": http.StatusMisdirectedRequest} {
		if got, _ := httpDoHost(t, "GET", open+"/", host, nil); got != want {
			t.Errorf("no auth, Host %q: %d, want %d", host, got, want)
		}
	}

	_, base := startConsole(t, e.with("WARREN_CONSOLE_TOKEN", "t0ken-for-the-test"), q)
	bearer := "Bearer t0ken-for-the-test"
	for _, c := range []struct {
		method, site, mode, dest string
		want                     int
	}{{"GET", "", "", "", http.StatusOK}, {"GET", "same-origin", "cors", "empty", http.StatusOK},
		{"GET", "cross-site", "navigate", "document", http.StatusOK},
		{"GET", "cross-site", "navigate", "iframe", http.StatusForbidden},
		{"GET", "cross-site", "cors", "empty", http.StatusForbidden}, {"GET", "cross-site", "no-cors", "image", http.StatusForbidden},
		{"HEAD", "cross-site", "no-cors", "empty", http.StatusForbidden}} {
		h := http.Header{"Authorization": {bearer}}
		if c.site != "" {
			h.Set("Sec-Fetch-Site", c.site)
			h.Set("Sec-Fetch-Mode", c.mode)
			h.Set("Sec-Fetch-Dest", c.dest)
		}
		if got, _ := httpDo(t, c.method, base+"/groups", h); got != c.want {
			t.Errorf("%s with Sec-Fetch-Site %q, Sec-Fetch-Mode %q, Sec-Fetch-Dest %q: %d, want %d", c.method, c.site, c.mode, c.dest, got, c.want)
		}
	}
}
