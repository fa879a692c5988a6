// Package examples_test builds and runs the examples against the real
// broker, so that they keep working.
package examples_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenmq/warren/internal/testenv"
)

func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestOrdersExample runs examples/orders with -once: it publishes its demo
// orders and exits 0 only when every one was booked (the flaky one after
// two retries); the logs show the dead letter and the duplicate.
func TestOrdersExample(t *testing.T) {
	bin := build(t, "github.com/warrenmq/warren/examples/orders")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-once")
	cmd.Env = append(os.Environ(), "WARREN_AMQP_URL="+testenv.AMQPURL(), "WARREN_REDIS_URL="+testenv.RedisURL())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("orders example: %v\n%s", err, out)
	}
	for _, want := range []string{`"msg":"order booked"`, `"outcome":"retry"`, `"outcome":"dead_letter"`, `"outcome":"duplicate"`, `"msg":"demo orders done"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("orders example log lacks %s", want)
		}
	}
}

// TestScriptWorkerExample walks through examples/script-worker: warren run
// with the shell handler acks, retries and dead-letters by exit code.
func TestScriptWorkerExample(t *testing.T) {
	warren := build(t, "github.com/warrenmq/warren/cmd/warren")
	q := testenv.Name(t)
	admin := testenv.NewAdmin(t)
	admin.DeleteQueues(q, q+".dlq", q+".retry.200ms", q+".retry.400ms")
	handled := filepath.Join(t.TempDir(), "handled.log")
	env := append(os.Environ(), "WARREN_AMQP_URL="+testenv.AMQPURL(), "WARREN_REDIS_URL="+testenv.RedisURL(),
		"WARREN_RETRY_DELAYS=200ms,400ms", "WARREN_DEDUPE_PREFIX="+q, "HANDLED_LOG="+handled)
	handler, _ := filepath.Abs("script-worker/handler.sh")
	run := exec.Command(warren, "run", "-queue", q, "-exec", handler)
	run.Env = env
	stderr, _ := run.StderrPipe()
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Process.Kill(); _ = run.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), `"msg":"running"`) {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("warren run did not start")
	}
	for _, body := range []string{"hello", "flaky job", "invalid input"} {
		pub := exec.Command(warren, "publish", "-routing-key", q, body)
		pub.Env = env
		if out, err := pub.CombinedOutput(); err != nil {
			t.Fatalf("publish %q: %v\n%s", body, err, out)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(handled)
		log := string(b)
		if strings.Contains(log, " 1 hello") && strings.Contains(log, " 2 flaky job") && admin.Count(q+".dlq") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled so far:\n%s\ndlq holds %d", log, admin.Count(q+".dlq"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		t.Fatalf("warren run did not drain cleanly: %v", err)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
