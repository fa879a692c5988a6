package main

// End-to-end tests of the warren binary: TestMain builds it once, and the
// tests drive it as an operator would, as subprocesses configured with
// WARREN_* environment variables, against the local RabbitMQ (and Redis
// for dedupe).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
)

// warrenBin is the binary under test, built by TestMain.
var warrenBin string

// Test timings. The delay tiers are the ones every test configures.
const (
	tier1       = 200 * time.Millisecond
	tier2       = 400 * time.Millisecond
	readyWait   = 20 * time.Second
	settleWait  = 20 * time.Second
	quietWindow = 1 * time.Second // longer than both tiers together: a retry would show
	stopWait    = 15 * time.Second
	oneShotWait = 30 * time.Second
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warren-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(2)
	}
	warrenBin = filepath.Join(dir, "warren")
	args := []string{"build", "-o", warrenBin}
	if raceBuild() {
		// The binary gets the race detector too: a race in it makes it
		// print a report and exit with 66, which the tests catch.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the warren binary:", err)
		_ = os.RemoveAll(dir)
		os.Exit(2)
	}
	// The tests mostly wait on subprocesses and the broker, so run more
	// of them at once than there are CPUs, unless -parallel says otherwise.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	code := m.Run()
	// Checked even when a test failed, so that every problem shows.
	if leaks := secretLeaks(); leaks != "" {
		fmt.Fprintln(os.Stderr, "e2e: a secret appeared in captured output:\n"+leaks)
		code = 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// raceBuild reports whether this test binary was built with -race.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// ---- captured output and secrets ------------------------------------------

// secrets are strings that must never appear in any output of the binary.
// "guest:guest@" is the password-bearing form of the test broker URL.
var secrets = []string{"guest:guest@", "wr0ngpassw0rd", "s3cr3tpassw0rd"}

var (
	capturedMu sync.Mutex
	captured   []capturedOutput // every stdout and stderr of every subprocess
)

type capturedOutput struct{ test, what, text string }

func record(t testing.TB, what, text string) {
	capturedMu.Lock()
	defer capturedMu.Unlock()
	captured = append(captured, capturedOutput{test: t.Name(), what: what, text: text})
}

// secretLeaks greps everything captured in the suite for the secrets.
func secretLeaks() string {
	capturedMu.Lock()
	defer capturedMu.Unlock()
	var b strings.Builder
	for _, c := range captured {
		for _, s := range secrets {
			if strings.Contains(c.text, s) {
				fmt.Fprintf(&b, "  %s: %s contains %q\n", c.test, c.what, s)
			}
		}
	}
	return b.String()
}

func checkSecrets(t testing.TB, what, text string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains the secret %q:\n%s", what, s, text)
		}
	}
	if strings.Contains(text, "WARNING: DATA RACE") {
		t.Errorf("%s reports a data race:\n%s", what, text)
	}
}

// ---- environment --------------------------------------------------------

// env is the WARREN_* configuration of one subprocess.
type env map[string]string

// baseEnv is the configuration every test starts from.
func baseEnv() env {
	return env{
		"WARREN_AMQP_URL":         testenv.AMQPURL(),
		"WARREN_QUEUE_TYPE":       "classic",
		"WARREN_RETRY_DELAYS":     "200ms,400ms",
		"WARREN_MAX_ATTEMPTS":     "3",
		"WARREN_DEDUPE":           "off",
		"WARREN_SHUTDOWN_TIMEOUT": "5s",
	}
}

func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// list is the process environment without any inherited WARREN_*
// variable, plus e.
func (e env) list() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") {
			out = append(out, kv)
		}
	}
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	// A race-enabled binary sleeps a second at exit unless told not to.
	if g := os.Getenv("GORACE"); g != "" {
		out = append(out, "GORACE="+g+" atexit_sleep_ms=0")
	} else {
		out = append(out, "GORACE=atexit_sleep_ms=0")
	}
	return out
}

// ---- one-shot commands --------------------------------------------------

type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("warren %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// warren runs the binary to completion with stdin (may be nil) and
// returns what it printed and its exit code.
func warren(t testing.TB, e env, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), oneShotWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, warrenBin, args...)
	cmd.Env = e.list()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	record(t, "stdout of warren "+strings.Join(args, " "), r.stdout)
	record(t, "stderr of warren "+strings.Join(args, " "), r.stderr)
	checkSecrets(t, "output of warren "+strings.Join(args, " "), r.stdout+r.stderr)
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("warren %s did not finish within %s\n%s", strings.Join(args, " "), oneShotWait, r)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("warren %s was killed by %v\n%s", strings.Join(args, " "), ws.Signal(), r)
		}
	default:
		t.Fatalf("running warren %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustWarren runs the binary and fails the test unless it exits 0.
func mustWarren(t testing.TB, e env, args ...string) result {
	t.Helper()
	r := warren(t, e, nil, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0\n%s", r)
	}
	return r
}

// publish publishes body to queue through the default exchange with the
// warren binary.
func publish(t testing.TB, e env, queue, id, body string) {
	t.Helper()
	r := mustWarren(t, e, "publish", "-routing-key", queue, "-message-id", id, body)
	if !strings.Contains(r.stdout, "confirmed") {
		t.Fatalf("publish did not report a confirm\n%s", r)
	}
}

// ---- long-running processes ---------------------------------------------

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running warren subprocess.
type proc struct {
	t              testing.TB
	args           []string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{} // closed once the process has been waited for
	code           int

	health, metrics string // addresses, when configured
}

// startWarren starts the binary. At cleanup it is killed if still
// running, its output is checked for secrets and races, and logged when
// the test failed.
func startWarren(t testing.TB, e env, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}),
		health: e["WARREN_HEALTH_ADDR"], metrics: e["WARREN_METRICS_ADDR"]}
	p.cmd = exec.Command(warrenBin, args...)
	p.cmd.Env = e.list()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting warren %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		default:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		what := "warren " + strings.Join(args, " ")
		record(t, "stdout of "+what, p.stdout.String())
		record(t, "stderr of "+what, p.stderr.String())
		checkSecrets(t, "output of "+what, p.stdout.String()+p.stderr.String())
		if t.Failed() {
			t.Logf("%s (exit %d)\nstdout:\n%s\nstderr:\n%s", what, p.code, p.stdout, p.stderr)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for a graceful exit 0.
func (p *proc) stop() {
	p.t.Helper()
	p.terminate()
	p.waitExit()
}

// terminate sends SIGTERM.
func (p *proc) terminate() {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("warren %s exited early with %d\nstderr:\n%s", strings.Join(p.args, " "), p.code, p.stderr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
}

// waitExit waits for exit 0 after terminate.
func (p *proc) waitExit() {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(stopWait):
		p.t.Fatalf("warren %s did not exit within %s of SIGTERM", strings.Join(p.args, " "), stopWait)
	}
	if p.code != 0 {
		p.t.Fatalf("warren %s exited with %d after SIGTERM, want 0 (graceful drain)\nstderr:\n%s", strings.Join(p.args, " "), p.code, p.stderr)
	}
}

// startRun starts `warren run` with health and metrics servers on free
// ports and waits until /readyz answers 200.
func startRun(t testing.TB, e env, args ...string) *proc {
	t.Helper()
	for try := 1; ; try++ {
		e = e.with("WARREN_HEALTH_ADDR", freeAddr(t), "WARREN_METRICS_ADDR", freeAddr(t))
		p := startWarren(t, e, append([]string{"run"}, args...)...)
		err := p.waitReady(readyWait)
		if err == nil {
			return p
		}
		// Another test may have taken a "free" port in the meantime.
		if try < 3 && p.exited() && strings.Contains(p.stderr.String(), "address already in use") {
			continue
		}
		t.Fatalf("%v\nstderr:\n%s", err, p.stderr)
	}
}

func (p *proc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return fmt.Errorf("warren %s exited with %d before it was ready", strings.Join(p.args, " "), p.code)
		}
		if code, _, err := httpGet("http://" + p.health + "/readyz"); err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warren %s not ready within %s", strings.Join(p.args, " "), timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// scrape returns the /metrics text.
func (p *proc) scrape() string {
	p.t.Helper()
	code, body, err := httpGet("http://" + p.metrics + "/metrics")
	if err != nil || code != http.StatusOK {
		p.t.Fatalf("GET /metrics: %d %v", code, err)
	}
	return body
}

// metric returns the value of one series, e.g.
// warren_messages_total{outcome="ack",queue="q"}, or -1 when absent.
func (p *proc) metric(series string) float64 {
	p.t.Helper()
	return metricValue(p.scrape(), series)
}

func metricValue(text, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series+" ")), 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// ---- HTTP and ports -----------------------------------------------------

// httpGet fetches url without keeping the connection open, so that no
// client goroutine outlives the test.
func httpGet(url string) (int, string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ---- waiting ------------------------------------------------------------

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stays checks that f keeps returning want for the whole window: that
// nothing more happens.
func stays[T comparable](t testing.TB, window time.Duration, what string, want T, f func() T) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if got := f(); got != want {
			t.Fatalf("%s changed within %s: got %v, want %v", what, window, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- broker -------------------------------------------------------------

// queueNames returns a fresh queue name, and deletes the queue, its tiers
// and its dead-letter queue when the test ends.
func queueNames(t testing.TB, admin *testenv.Admin) string {
	q := testenv.Name(t)
	admin.DeleteQueues(q, retry.DLQ(q), retry.TierQueue(q, tier1), retry.TierQueue(q, tier2))
	return q
}

// queueExists asks the broker whether queue exists, without creating it.
func queueExists(t testing.TB, queue string) bool {
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
	_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return false
	}
	if err != nil {
		t.Fatalf("passive declare %q: %v", queue, err)
	}
	return true
}

// ---- handler scripts ----------------------------------------------------

// lineLog is a file a handler script appends one line per run to.
type lineLog string

func (l lineLog) lines() []string {
	b, err := os.ReadFile(string(l))
	if err != nil {
		return nil
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (l lineLog) count() int { return len(l.lines()) }

// has counts the lines equal to line.
func (l lineLog) has(line string) int {
	n := 0
	for _, x := range l.lines() {
		if x == line {
			n++
		}
	}
	return n
}

// writeScript writes an executable shell script into a temp dir of t.
func writeScript(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handler.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatalf("writing the handler script: %v", err)
	}
	return path
}
