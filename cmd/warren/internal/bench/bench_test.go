package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cmd/warren/internal/bench"
	"github.com/warrenmq/warren/internal/testenv"
)

// Environment of the idle-rss child, which is this test binary run again.
const (
	childEnv        = "WARREN_BENCH_TEST_IDLE_CHILD" // the queue name prefix
	childAMQPURLEnv = "WARREN_BENCH_TEST_AMQP_URL"
)

func TestMain(m *testing.M) {
	if prefix := os.Getenv(childEnv); prefix != "" {
		if err := bench.IdleChild(context.Background(), os.Getenv(childAMQPURLEnv), prefix, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "idle child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs every case once with tiny sizes and checks that each
// measured something and processed exactly the messages it was given.
// It asserts nothing about speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every bench case against the broker and Redis")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const messages, inFlight = 300, 300
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cases := bench.CaseNames()
	if ok, err := testenv.HasConsistentHash(testenv.AMQPURL()); err != nil {
		t.Fatalf("checking the test broker for %s: %v", testenv.HashPlugin, err)
	} else if !ok {
		// TestRouteOrderedNeedsPlugin covers the case's failure then.
		t.Log("the test broker has no consistent-hash exchange plugin: route-ordered left out")
		cases = slices.DeleteFunc(cases, func(c string) bool { return c == "route-ordered" })
	}
	rep, err := bench.Run(ctx, bench.Options{
		AMQPURL:    testenv.AMQPURL(),
		RedisURL:   testenv.RedisURL(),
		Rounds:     1,
		Messages:   messages,
		QueueTypes: []broker.QueueType{broker.Classic, broker.Quorum},
		InFlight:   inFlight,
		Cases:      cases,
		Out:        &out,
		IdleSettle: 500 * time.Millisecond,
		IdleCommand: func(amqpURL, prefix string) (*exec.Cmd, error) {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+prefix, childAMQPURLEnv+"="+amqpURL)
			return cmd, nil
		},
	})
	t.Logf("bench output:\n%s", out.String())
	if err != nil {
		t.Fatalf("bench.Run: %v", err)
	}
	want := map[string]int{
		"baseline-consume":      messages,
		"ceiling-consume":       messages,
		"warren-consume":        messages,
		"warren-consume-dedupe": messages,
		"warren-consume-traced": messages,
		"baseline-publish":      messages,
		"baseline-publish-8":    messages,
		"warren-publish":        messages,
		"warren-publish-batch":  messages,
		"ceiling-io":            messages,
		"baseline-io":           messages,
		"io-bound":              messages,
		"route-plain":           messages,
		"route-ordered":         messages,
		"memory-inflight":       inFlight,
		"idle-rss":              0,
	}
	types := []broker.QueueType{broker.Classic, broker.Quorum}
	if len(rep.Results) != len(cases)*len(types) {
		t.Errorf("got %d results, want %d", len(rep.Results), len(cases)*len(types))
	}
	for _, qt := range types {
		for _, name := range cases {
			checkSmoke(t, rep.ResultOn(name, qt), name, qt, want[name], out.String())
		}
	}
	for _, res := range rep.Results {
		for _, w := range res.Warnings {
			t.Logf("%s: warning: %s", res.Case, w)
		}
	}
}

// checkSmoke checks one case's result of TestSmoke.
func checkSmoke(t *testing.T, res *bench.Result, name string, qt broker.QueueType, want int, out string) {
	t.Helper()
	if res == nil {
		t.Errorf("%s (%s): no result", name, qt)
		return
	}
	if res.Failed() {
		t.Errorf("%s (%s): failed: %v", name, qt, res.Errors)
	}
	if len(res.Rounds) != 1 {
		t.Errorf("%s (%s): %d round(s), want 1", name, qt, len(res.Rounds))
		return
	}
	r := res.Rounds[0]
	if !(r.Value > 0) {
		t.Errorf("%s (%s): value %v, want > 0", name, qt, r.Value)
	}
	if r.Expected != want || r.Processed != want {
		t.Errorf("%s (%s): given %d, processed %d; want %d of each", name, qt, r.Expected, r.Processed, want)
	}
	line := "BENCH case=" + name + " queue=" + string(qt) + " value="
	if !strings.Contains(out, line) {
		t.Errorf("%s (%s): the output has no %q line", name, qt, line)
	}
}

func TestBadQueueType(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Options{QueueTypes: []broker.QueueType{"stream"}})
	if err == nil || !strings.Contains(err.Error(), `a queue type must be "classic" or "quorum", got "stream"`) {
		t.Fatalf("got %v, want a queue type error", err)
	}
}

func TestUnknownCase(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Options{Cases: []string{"nope"}})
	if err == nil || !strings.Contains(err.Error(), `unknown case "nope"`) {
		t.Fatalf("got %v, want an unknown case error", err)
	}
}

func TestBadIOWait(t *testing.T) {
	_, err := bench.Run(context.Background(), bench.Options{IOWait: "spin"})
	if err == nil || !strings.Contains(err.Error(), `the I/O wait must be "sleep" or "syscall", got "spin"`) {
		t.Fatalf("got %v, want an I/O wait error", err)
	}
}

// TestIOWaitSyscall runs the I/O cases with blocking waits and checks that
// they handled every message and say how they waited.
func TestIOWaitSyscall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs bench cases against the broker")
	}
	if runtime.GOOS != "linux" {
		t.Skip("blocking waits need Linux")
	}
	var out bytes.Buffer
	rep, err := bench.Run(context.Background(), bench.Options{
		AMQPURL: testenv.AMQPURL(), RedisURL: testenv.RedisURL(), Rounds: 1, Messages: 300,
		Cases: []string{"baseline-io", "io-bound"}, IOWait: bench.WaitSyscall, Out: &out,
	})
	t.Logf("bench output:\n%s", out.String())
	if err != nil {
		t.Fatalf("bench.Run: %v", err)
	}
	for _, name := range []string{"baseline-io", "io-bound"} {
		res := rep.Result(name)
		if res == nil || len(res.Rounds) != 1 || res.Rounds[0].Processed != 300 {
			t.Fatalf("%s: %+v", name, res)
		}
	}
	if !strings.Contains(out.String(), "I/O cases wait with a blocking nanosleep") {
		t.Error("the report does not say how the I/O cases waited")
	}
}
