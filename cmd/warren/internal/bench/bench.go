// Package bench measures warren against plain amqp091-go on a live broker
// (and Redis, for dedupe): consume and publish throughput, an I/O-bound
// handler against its theoretical rate, the heap per in-flight message and
// the resident memory of an idle worker. `warren bench` runs it. Reference
// cases put the targets in context within the same run: the broker's
// ceiling for a consumer that does nothing (ceiling-consume), plain
// amqp091-go doing io-bound's work (baseline-io), and the same 2 ms waits
// without a broker (ceiling-io).
//
// Every case runs in this process (idle-rss in a child process) against
// fresh, uniquely named durable queues, one set per case and round,
// deleted afterwards, of the queue type asked for: the worker's default
// (quorum) unless Options.QueueTypes says otherwise. With several types,
// each round runs every case once per type, and each case's ratio is
// taken against its baseline of the same type. Messages are persistent.
// For the consume cases the queue is filled by a plain confirmed
// publisher before the clock starts.
//
// The report ends with one line per case and queue type that a script
// can parse:
//
//	BENCH case=<name> queue=<classic|quorum> value=<median> unit=<msg/s|ratio|MiB> min=<x> max=<y> ratio=<r> target=<t>
//
// where "-" stands for a value that does not apply. Targets are reported,
// never asserted.
package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/redact"
	"github.com/warrenmq/warren/worker"
)

// Defaults for Options.
const (
	DefaultRounds     = 5
	DefaultMessages   = 20000
	DefaultInFlight   = 5000
	DefaultIdleSettle = 2 * time.Second
	DefaultAMQPURL    = "amqp://guest:guest@127.0.0.1:5672/"
	DefaultRedisURL   = "redis://127.0.0.1:6379/0"

	// BodySize is the size of a message body in every case but
	// memory-inflight.
	BodySize = 256
	// InFlightBodySize is the size of a memory-inflight message body.
	InFlightBodySize = 4096
	// IdleRoutes is the number of routes of the idle-rss worker.
	IdleRoutes = 10
)

// Options configures Run.
type Options struct {
	// AMQPURL is the broker. "" means DefaultAMQPURL.
	AMQPURL string
	// RedisURL is the dedupe store of warren-consume-dedupe. "" means
	// DefaultRedisURL.
	RedisURL string
	// Rounds is how many times each case runs. 0 means DefaultRounds.
	Rounds int
	// Messages is the number of messages of each throughput round.
	// 0 means DefaultMessages.
	Messages int
	// InFlight is the number of messages (and handlers) held in flight by
	// memory-inflight. 0 means DefaultInFlight.
	InFlight int
	// Cases names the cases to run, in any order; they run in the
	// canonical order. nil means all of them.
	Cases []string
	// QueueTypes are the queue types to run the cases on, in order. nil
	// means the worker's default, worker.DefaultQueueType.
	QueueTypes []broker.QueueType
	// Out receives the report. nil means io.Discard.
	Out io.Writer
	// IdleCommand returns the command that runs IdleChild for idle-rss in
	// a child process with the given queue name prefix. The child must
	// reach the broker at the URL given. nil makes idle-rss fail.
	IdleCommand func(amqpURL, prefix string) (*exec.Cmd, error)
	// IdleSettle is how long the idle child idles after it is ready,
	// before its RSS is read. 0 means DefaultIdleSettle.
	IdleSettle time.Duration
	// IOWait is how the I/O cases' handlers wait their 2 ms: WaitSleep
	// (time.Sleep, the default; "" means it) or WaitSyscall (a blocking
	// nanosleep, which does not depend on the runtime's timers, as a
	// handler blocked in a system call or a C library would wait).
	IOWait string
}

// Ways for the I/O cases' handlers to wait.
const (
	WaitSleep   = "sleep"
	WaitSyscall = "syscall"
)

func (o Options) withDefaults() Options {
	if o.AMQPURL == "" {
		o.AMQPURL = DefaultAMQPURL
	}
	if o.RedisURL == "" {
		o.RedisURL = DefaultRedisURL
	}
	if o.Rounds == 0 {
		o.Rounds = DefaultRounds
	}
	if o.Messages == 0 {
		o.Messages = DefaultMessages
	}
	if o.InFlight == 0 {
		o.InFlight = DefaultInFlight
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.IdleSettle == 0 {
		o.IdleSettle = DefaultIdleSettle
	}
	if o.IOWait == "" {
		o.IOWait = WaitSleep
	}
	if len(o.QueueTypes) == 0 {
		o.QueueTypes = []broker.QueueType{worker.DefaultQueueType}
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Rounds < 1:
		return fmt.Errorf("bench: rounds must be at least 1, got %d", o.Rounds)
	case o.Messages < 1:
		return fmt.Errorf("bench: messages must be at least 1, got %d", o.Messages)
	case o.InFlight < 1 || o.InFlight > 10000:
		return fmt.Errorf("bench: in-flight messages must be between 1 and 10000, got %d", o.InFlight)
	case o.IdleSettle < 0:
		return fmt.Errorf("bench: idle settle time must not be negative, got %s", o.IdleSettle)
	case o.IOWait != WaitSleep && o.IOWait != WaitSyscall:
		return fmt.Errorf("bench: the I/O wait must be %q or %q, got %q", WaitSleep, WaitSyscall, o.IOWait)
	case o.IOWait == WaitSyscall && !haveBlockingSleep:
		return fmt.Errorf("bench: the I/O wait %q needs Linux", WaitSyscall)
	}
	seen := map[broker.QueueType]bool{}
	for _, t := range o.QueueTypes {
		if t != broker.Classic && t != broker.Quorum {
			return fmt.Errorf("bench: a queue type must be %q or %q, got %q", broker.Classic, broker.Quorum, t)
		}
		if seen[t] {
			return fmt.Errorf("bench: queue type %q given twice", t)
		}
		seen[t] = true
	}
	_, err := selectCases(o.Cases)
	return err
}

// Units of a case's value.
const (
	UnitRate  = "msg/s"
	UnitRatio = "ratio"
	UnitMiB   = "MiB"
)

// caseDef describes one case.
type caseDef struct {
	name string
	unit string
	// baseline is the case whose median the ratio divides by; reference
	// is a constant to divide by instead. Neither: the ratio is the value
	// itself when selfRatio, or none.
	baseline  string
	reference float64
	selfRatio bool
	// target is what the ratio (or the value, without a ratio) should
	// reach, as printed: ">=1.4", "<3".
	target string
	run    func(e *env, ctx context.Context, round int) (Round, error)
}

// ioReference is the theoretical rate of io-bound: 32 handlers that each
// take 2 ms.
const ioReference = 32.0 / 0.002

func allCases() []caseDef {
	return []caseDef{
		{name: "baseline-consume", unit: UnitRate, run: (*env).baselineConsume},
		{name: "ceiling-consume", unit: UnitRate, baseline: "baseline-consume", run: (*env).ceilingConsume},
		{name: "warren-consume", unit: UnitRate, baseline: "ceiling-consume", target: ">=0.95", run: (*env).warrenConsume},
		{name: "warren-consume-dedupe", unit: UnitRate, baseline: "warren-consume", target: ">=0.85", run: (*env).warrenConsumeDedupe},
		{name: "warren-consume-traced", unit: UnitRate, baseline: "warren-consume", run: (*env).warrenConsumeTraced},
		{name: "baseline-publish", unit: UnitRate, run: (*env).baselinePublish},
		{name: "warren-publish-batch", unit: UnitRate, baseline: "baseline-publish", target: ">=1.0", run: (*env).warrenPublishBatch},
		{name: "baseline-publish-8", unit: UnitRate, run: (*env).baselinePublish8},
		{name: "warren-publish", unit: UnitRate, baseline: "baseline-publish-8", target: ">=1.0", run: (*env).warrenPublish},
		{name: "ceiling-io", unit: UnitRate, reference: ioReference, run: (*env).ceilingIO},
		{name: "baseline-io", unit: UnitRate, baseline: "ceiling-io", run: (*env).baselineIO},
		{name: "io-bound", unit: UnitRate, baseline: "ceiling-io", target: ">=0.95", run: (*env).ioBound},
		{name: "route-plain", unit: UnitRate, run: (*env).routePlain},
		{name: "route-ordered", unit: UnitRate, baseline: "route-plain", run: (*env).routeOrdered},
		{name: "memory-inflight", unit: UnitRatio, selfRatio: true, target: "<3", run: (*env).memoryInFlight},
		{name: "idle-rss", unit: UnitMiB, target: "<30", run: (*env).idleRSS},
	}
}

// CaseNames returns every case name in the order they run.
func CaseNames() []string {
	var names []string
	for _, c := range allCases() {
		names = append(names, c.name)
	}
	return names
}

func selectCases(names []string) ([]caseDef, error) {
	all := allCases()
	if len(names) == 0 {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		found := false
		for _, c := range all {
			found = found || c.name == n
		}
		if !found {
			return nil, fmt.Errorf("bench: unknown case %q (cases: %s)", n, strings.Join(CaseNames(), ", "))
		}
		want[n] = true
	}
	if len(want) == 0 {
		return nil, errors.New("bench: no case selected")
	}
	var out []caseDef
	for _, c := range all {
		if want[c.name] {
			out = append(out, c)
		}
	}
	return out, nil
}

// Round is one measurement of a case.
type Round struct {
	// Value is the measurement, in the case's unit.
	Value float64
	// Expected is how many messages the round was given, and Processed
	// how many it handled (consumed, or confirmed for publish cases).
	// Both are 0 for idle-rss.
	Expected, Processed int
	// Elapsed is the timed section of a throughput round.
	Elapsed time.Duration
	// Detail is extra information for people.
	Detail string
}

// Result is a case's rounds and their summary.
type Result struct {
	Case string
	// QueueType is the type of the queues the case ran on.
	QueueType broker.QueueType
	Unit      string
	Rounds    []Round
	// Errors are the failures of rounds that produced no value.
	Errors []error
	// Warnings are surprises that did not spoil a measurement.
	Warnings []string
	// Median, Min and Max summarize the values of the successful rounds.
	Median, Min, Max float64
	// Ratio is the median against the case's baseline or reference; set
	// only when HasRatio.
	Ratio    float64
	HasRatio bool
	// Target is what the ratio (or the value) should reach, or "".
	Target string
}

// Failed reports whether any round failed.
func (r *Result) Failed() bool { return len(r.Errors) > 0 }

// Report is the outcome of Run.
type Report struct {
	Results []*Result
	// PeakRSS is the bench process's VmHWM at the end, in bytes
	// (0 when /proc is not available).
	PeakRSS uint64
	// HeapInuse and HeapAlloc are the bench process's at the end.
	HeapInuse, HeapAlloc uint64
}

// Result returns the result of the named case on the first queue type
// run, or nil.
func (r *Report) Result(name string) *Result {
	for _, res := range r.Results {
		if res.Case == name {
			return res
		}
	}
	return nil
}

// ResultOn returns the result of the named case on queue type t, or nil.
func (r *Report) ResultOn(name string, t broker.QueueType) *Result {
	for _, res := range r.Results {
		if res.Case == name && res.QueueType == t {
			return res
		}
	}
	return nil
}

// Run runs the selected cases for the configured rounds, writing each
// round and then the summary to opts.Out. It returns the report, and an
// error when a case failed or the run could not start; the report is
// complete up to the failure.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	defs, _ := selectCases(opts.Cases)
	e, err := newEnv(opts)
	if err != nil {
		return nil, err
	}
	defer e.close()
	out := opts.Out
	fmt.Fprintf(out, "warren bench: %d round(s); %d persistent %d-byte messages per throughput round; %s durable queues\n",
		opts.Rounds, opts.Messages, BodySize, typeNames(opts.QueueTypes))
	fmt.Fprintf(out, "broker %s, redis %s, GOMAXPROCS %d, %s; I/O cases wait with %s\n", redact.URL(opts.AMQPURL), redact.URL(opts.RedisURL),
		runtime.GOMAXPROCS(0), runtime.Version(), ioWaitName(opts.IOWait))
	var runs []caseRun
	for _, t := range opts.QueueTypes {
		for _, c := range defs {
			runs = append(runs, caseRun{caseDef: c, qtype: t, res: &Result{Case: c.name, QueueType: t, Unit: c.unit, Target: c.target}})
		}
	}
	width := 0
	for _, c := range defs {
		width = max(width, len(c.name))
	}
	for round := 1; round <= opts.Rounds; round++ {
		fmt.Fprintf(out, "\n== round %d/%d\n", round, opts.Rounds)
		for _, r := range runs {
			if err := ctx.Err(); err != nil {
				return finish(out, runs), fmt.Errorf("bench: interrupted: %w", err)
			}
			r.once(ctx, e, round, out, width, len(opts.QueueTypes) > 1)
		}
	}
	rep := finish(out, runs)
	var failed []string
	for _, res := range rep.Results {
		if res.Failed() {
			failed = append(failed, res.Case+" ("+string(res.QueueType)+")")
		}
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("bench: case(s) failed: %s", strings.Join(failed, ", "))
	}
	return rep, nil
}

// caseRun is a case on one queue type, and its result.
type caseRun struct {
	caseDef
	qtype broker.QueueType
	res   *Result
}

// once runs one round of the case and prints it.
func (r caseRun) once(ctx context.Context, e *env, round int, out io.Writer, width int, typed bool) {
	e.qtype = r.qtype
	var (
		got Round
		err error
	)
	// The labels let a CPU profile of the run (-cpuprofile) be read case
	// by case: go tool pprof -tagfocus case=warren-consume.
	pprof.Do(ctx, pprof.Labels("case", r.name, "queue", string(r.qtype)), func(ctx context.Context) {
		got, err = r.run(e, ctx, round)
	})
	r.res.Warnings = append(r.res.Warnings, e.takeWarnings(round)...)
	label := r.name
	if typed {
		label += " [" + string(r.qtype) + "]"
		width += len(" [classic]")
	}
	if err != nil {
		r.res.Errors = append(r.res.Errors, fmt.Errorf("round %d: %w", round, err))
		fmt.Fprintf(out, "  %-*s  FAILED: %v\n", width, label, err)
		return
	}
	r.res.Rounds = append(r.res.Rounds, got)
	fmt.Fprintf(out, "  %-*s  %12s %-5s  %s\n", width, label, formatValue(got.Value, r.unit), r.unit, got.Detail)
}

// typeNames lists queue types for people: "quorum", "classic and quorum".
func typeNames(ts []broker.QueueType) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = string(t)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func ioWaitName(w string) string {
	if w == WaitSyscall {
		return "a blocking nanosleep"
	}
	return "time.Sleep"
}

// uniqueSuffix is 8 random lowercase base32 characters.
func uniqueSuffix() string { return strings.ToLower(rand.Text()[:8]) }

// procStatus reads a field of /proc/<pid>/status in bytes ("self" for
// this process).
func procStatus(pid, field string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		var kb uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			return 0, fmt.Errorf("parsing %s %q: %w", field, v, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("/proc/%s/status has no %s", pid, field)
}
