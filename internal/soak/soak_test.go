// Package soak holds warren's soak-with-faults test: two worker processes
// consume a stream of messages while the test cuts their broker and Redis
// links, kills them (SIGKILL) and stops them (SIGTERM), and crashes Redis.
// At the end it proves with counts that no message was lost and no
// successful effect ran twice. TestClusterSoakWithFaults (cluster_test.go)
// runs the same soak against a three-node RabbitMQ cluster, node kills among
// its faults.
//
//	go test -race -count=1 -v -run Soak ./internal/soak/                    # 2000 messages
//	go test -count=1 -v -run Soak ./internal/soak/ -soak.n=100000 -timeout 2h
//
// The worker binary is ./soakworker; see its doc for the message kinds and
// how effects are recorded.
package soak

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

var (
	flagN        = flag.Int("soak.n", 2000, "soak: number of messages to publish")
	flagRate     = flag.Float64("soak.rate", 100, "soak: publish rate in messages per second (0: as fast as confirms come)")
	flagSeed     = flag.Int64("soak.seed", 0, "soak: seed of message kinds and the fault schedule (0: from the clock)")
	flagFaultGap = flag.Duration("soak.fault-gap", 1200*time.Millisecond, "soak: mean time between two faults")
	flagWork     = flag.Duration("soak.work", 150*time.Millisecond, "soak: each handler run first works for a random time below this, so that faults find handlers busy")
	flagTimeout  = flag.Duration("soak.timeout", 0, "soak: deadline for every message to settle (0: n/rate*1.5 + 90s)")
	flagLogDir   = flag.String("soak.logdir", "", "soak: keep the worker logs in this directory (default: a temporary one)")
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Worker settings of the soak.
var (
	retryDelays = []time.Duration{200 * time.Millisecond, 500 * time.Millisecond}
	workerEnv   = []string{
		"WARREN_RETRY_DELAYS=200ms,500ms",
		"WARREN_MAX_ATTEMPTS=4",
		"WARREN_HANDLER_TIMEOUT=5s",
		"WARREN_SHUTDOWN_TIMEOUT=5s",
		"WARREN_DEDUPE=on",
		"WARREN_DEDUPE_LEASE=3s",
		"WARREN_QUEUE_TYPE=quorum",
		"WARREN_CONCURRENCY=8",
		"WARREN_LOG_LEVEL=debug",
		"WARREN_LOG_FORMAT=json",
	}
)

const (
	numWorkers   = 2
	drainTimeout = 20 * time.Second // SIGTERM to exit; the drain itself is bounded by 5s
	quiet        = 2 * time.Second  // how long the settled state must hold
)

// Fault kinds.
const (
	faultAMQPCut      = "amqp_cut"       // cut one worker's broker connections (proxy)
	faultRedisCut     = "redis_cut"      // cut one worker's Redis connections (proxy)
	faultSIGKILL      = "worker_sigkill" // kill -9 one worker, start a new one
	faultSIGTERM      = "worker_sigterm" // graceful stop of one worker, start a new one
	faultRedisCrash   = "redis_crash"    // kill -9 the private Redis, start it again
	faultPublisherCut = "publisher_cut"  // cut the test publisher's connection
	// cut one worker's broker links and refuse new ones for a while
	faultAMQPPartition = "amqp_partition"
	// graceful stop of one worker while its broker is unreachable
	faultSIGTERMPartitioned = "worker_sigterm_broker_unreachable"
	// graceful stop of one worker while Redis is down
	faultSIGTERMRedisDown = "worker_sigterm_redis_down"
	// kill -9 one RabbitMQ node of the cluster, start it again (cluster soak only)
	faultNodeKill = "node_kill"
)

var faultKinds = []string{faultAMQPCut, faultRedisCut, faultSIGKILL, faultSIGTERM, faultRedisCrash, faultPublisherCut,
	faultAMQPPartition, faultSIGTERMPartitioned, faultSIGTERMRedisDown}

type soakMsg struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

type pubStats struct {
	attempts  atomic.Int64
	confirmed atomic.Int64
	errors    atomic.Int64
	abandoned atomic.Int64
	mu        sync.Mutex
	samples   []string
}

// soak is one run.
type soak struct {
	t        *testing.T
	start    time.Time
	rng      *rand.Rand // used by the fault goroutine only, once it runs
	fleet    *fleet
	redis    *redisServer
	pubProxy *brokerLink
	pubDone  chan struct{}
	kinds    []string         // the fault kinds of this run
	cluster  *testenv.Cluster // nil: the single test broker
	nextNode int              // the node the next node fault kills, 1..3
	nodeDown []time.Duration  // how long each killed node took to serve AMQP again after its start
	// node kills while the publisher ran or messages waited
	nodeKillsUnderLoad int

	backlog atomic.Int64 // ready messages in the queue and its tiers, last read

	mu        sync.Mutex
	faults    map[string]int
	faultErrs []string
	timeline  []faultAt // when each fault began
}

func (s *soak) since() string { return time.Since(s.start).Round(time.Millisecond).String() }

func (s *soak) logf(format string, args ...any) {
	s.t.Logf("soak +%s: "+format, append([]any{s.since()}, args...)...)
}

func TestSoakWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	runSoak(t, target{nodes: []string{testenv.AMQPURL()}, kinds: faultKinds})
}

// target is the broker a soak runs against.
type target struct {
	nodes   []string         // the broker's addresses, one per node
	cluster *testenv.Cluster // nil: a single broker, never restarted
	kinds   []string         // the fault kinds
	// minNodeKills: the faults go on until this many node kills were
	// injected (or the fault deadline passed).
	minNodeKills int
	extraTime    time.Duration // added to the default settle deadline
	// rate is the publish rate when -soak.rate is not given (0: the
	// flag's default).
	rate float64
}

func runSoak(t *testing.T, tg target) {
	n := *flagN
	rate := *flagRate
	if tg.rate > 0 {
		rate = tg.rate
		flag.Visit(func(f *flag.Flag) {
			if f.Name == "soak.rate" {
				rate = *flagRate
			}
		})
	}
	if n < 1 {
		t.Fatalf("-soak.n must be at least 1, got %d", n)
	}
	seed := *flagSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	start := time.Now()
	t.Logf("soak: seed %d (rerun with -soak.seed=%d), n=%d, rate=%g/s, work<%s, fault gap ~%s", seed, seed, n, rate, *flagWork, *flagFaultGap)
	fmt.Printf("SOAK seed=%d n=%d rate=%g work=%s fault_gap=%s\n", seed, n, rate, *flagWork, *flagFaultGap)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x50a4))

	timeout := *flagTimeout
	if timeout == 0 {
		pubTime := time.Duration(0)
		if rate > 0 {
			pubTime = time.Duration(float64(n) / rate * float64(time.Second))
		}
		timeout = pubTime*3/2 + 90*time.Second + tg.extraTime
	}

	tmp := t.TempDir()
	logDir := *flagLogDir
	if logDir == "" {
		logDir = filepath.Join(tmp, "logs")
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testenv.BuildBinary(t, tmp, "./soakworker")
	t.Logf("soak: worker built in %s; logs in %s", time.Since(start).Round(time.Millisecond), logDir)
	start = time.Now() // the deadline and the wall time count from here

	queue := testenv.Name(t)
	runID := queue[len(queue)-8:]
	prefix := "soak-" + runID
	tiers := make([]string, len(retryDelays))
	for i, d := range retryDelays {
		tiers[i] = retry.TierQueue(queue, d)
	}
	dlq := retry.DLQ(queue)
	queues := append([]string{queue}, tiers...) // where messages wait to be handled
	testenv.NewAdminAt(t, liveNode(tg.nodes)).DeleteQueues(append([]string{dlq}, queues...)...)
	// Progress is read on a supervised connection of its own, straight to
	// the broker, so that nothing the soak (or another test) does to
	// connections stops the reading.
	ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer icancel()
	inspect, err := broker.Dial(ictx, broker.Config{URL: strings.Join(tg.nodes, ","), Name: "soak-inspect", MaxBackoff: time.Second})
	if err != nil {
		t.Fatalf("inspection connection: %v", err)
	}
	t.Cleanup(func() { _ = inspect.Close() })

	rs := startRedisServer(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.addr(), MaxRetries: 1, DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rc.Close() })

	// The publisher: warren's own, through a proxy of its own.
	pubProxy := newBrokerLink(t, tg.nodes)
	pubURL := pubProxy.url
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	pconn, err := broker.Dial(dctx, broker.Config{URL: pubURL, Name: "soak-publisher", MaxBackoff: time.Second})
	if err != nil {
		t.Fatalf("publisher connection: %v", err)
	}
	t.Cleanup(func() { _ = pconn.Close() })
	if err := pconn.Declare(dctx, topology(t, queue)); err != nil {
		t.Fatalf("declaring the soak topology: %v", err)
	}
	pub := pconn.NewPublisher()
	t.Cleanup(func() { _ = pub.Close() })

	msgs := make([]soakMsg, n)
	kindOf := make(map[string]string, n)
	plan := map[string]int{}
	for i := range msgs {
		k := "ok"
		switch r := rng.IntN(1000); {
		case r < 100:
			k = "transient"
		case r < 110:
			k = "permanent"
		case r < 120:
			k = "panic"
		case r < 140:
			k = "slow"
		}
		msgs[i] = soakMsg{ID: fmt.Sprintf("m%07d", i), Kind: k}
		kindOf[msgs[i].ID] = k
		plan[k]++
	}
	t.Logf("soak: message kinds %v", plan)

	env := []string{"SOAK_QUEUE=" + queue, "SOAK_RUN=" + runID, "WARREN_DEDUPE_PREFIX=" + prefix, "SOAK_WORK=" + flagWork.String()}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") && !strings.HasPrefix(kv, "SOAK_") {
			env = append(env, kv)
		}
	}
	env = append(env, workerEnv...)
	fl := newFleet(t, bin, logDir, env, numWorkers, rs.addr(), tg.nodes)
	s := &soak{t: t, start: start, rng: rng, fleet: fl, redis: rs, pubProxy: pubProxy,
		pubDone: make(chan struct{}), faults: map[string]int{}, kinds: tg.kinds, cluster: tg.cluster, nextNode: 1 + rng.IntN(3)}
	if err := fl.startAll(); err != nil {
		t.Fatal(err)
	}

	// Background: the publisher and the fault injector. Both end at
	// cleanup at the latest, before the processes and proxies go.
	bg, cancelBg := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	faultsStop, faultsDone := make(chan struct{}), make(chan struct{})
	var stopFaultsOnce sync.Once
	stopFaults := func() {
		stopFaultsOnce.Do(func() { close(faultsStop) })
		<-faultsDone
	}
	t.Cleanup(func() {
		cancelBg()
		stopFaults()
		bgWG.Wait()
	})
	var ps pubStats
	bgWG.Add(1)
	go func() {
		defer bgWG.Done()
		defer close(s.pubDone)
		publishAll(bg, pub, queue, msgs, rate, &ps)
	}()
	go func() {
		defer close(faultsDone)
		s.injectFaults(faultsStop)
	}()

	// Wait until every message is settled, then drain the workers. If the
	// drain leaves messages behind (copies in flight at the quiet check),
	// start the workers again and wait once more.
	deadline := start.Add(timeout)
	faultStopAt := deadline.Add(-45 * time.Second)
	faultsStopped := false
	settled := false
	var lastProgress time.Time
	var drainProblems []string
	var st status
rounds:
	for round := 1; round <= 3; round++ {
		var quietSince time.Time
		for {
			fl.ensure()
			if crashes := fl.unexpectedExits(); len(crashes) > 5 {
				t.Fatalf("soak: workers keep exiting by themselves:\n%s\nlast log:\n%s",
					strings.Join(crashes, "\n"), tail(fl.lastCrashLog(), 20))
			}
			st = s.status(inspect, rc, queues, dlq, runID)
			if st.ok {
				s.backlog.Store(int64(st.backlog))
			}
			published := closed(s.pubDone)
			cond := published && st.ok && st.processed+st.dlq >= n && st.backlog == 0
			enough := s.faultCounts()[faultNodeKill] >= tg.minNodeKills
			if !faultsStopped && ((cond && enough) || time.Now().After(faultStopAt)) {
				s.logf("stopping faults (all settled once: %v); %s", cond, st)
				stopFaults()
				faultsStopped = true
				if err := rs.start(); err != nil {
					t.Errorf("restarting redis after the faults: %v", err)
				}
				if tg.cluster != nil {
					for node := 1; node <= 3; node++ {
						tg.cluster.Start(node) // a no-op on a running node
					}
				}
				if err := fl.startAll(); err != nil {
					t.Errorf("restarting workers after the faults: %v", err)
				}
				quietSince = time.Time{}
				continue
			}
			if cond && faultsStopped {
				if quietSince.IsZero() {
					quietSince = time.Now()
				} else if time.Since(quietSince) >= quiet {
					break
				}
			} else {
				quietSince = time.Time{}
			}
			if time.Now().After(deadline) {
				t.Errorf("soak: not settled within %s: published=%v %s", timeout, published, st)
				drainProblems = append(drainProblems, fl.stopAll(drainTimeout)...)
				break rounds
			}
			if time.Since(lastProgress) >= 5*time.Second {
				lastProgress = time.Now()
				s.logf("published %d/%d, %s, faults %v", ps.confirmed.Load(), n, st, s.faultCounts())
			}
			time.Sleep(250 * time.Millisecond)
		}
		s.logf("round %d settled: %s; draining the workers (SIGTERM)", round, st)
		drainProblems = append(drainProblems, fl.stopAll(drainTimeout)...)
		left, err := countReady(inspect, queues)
		if err == nil && left == 0 {
			settled = true
			break
		}
		s.logf("round %d: %d messages back in the queues after the drain (%v); starting the workers again", round, left, err)
		if err := fl.startAll(); err != nil {
			t.Fatal(err)
		}
	}
	cancelBg()
	bgWG.Wait()
	wall := time.Since(start)

	// Collect: dead letters, leftovers, effects, logs. A fresh admin
	// connection takes the messages out.
	admin := testenv.NewAdminAt(t, liveNode(tg.nodes))
	admin.DeleteQueues(append([]string{dlq}, queues...)...)
	rep := &report{n: n, kindOf: kindOf, plan: plan}
	rep.collectDLQ(admin.GetAll(dlq))
	for _, q := range queues {
		for _, d := range admin.GetAll(q) {
			rep.leftover[q]++
			rep.leftoverIDs[bodyID(d.Body, d.MessageId)] = true
		}
	}
	if err := rep.collectEffects(rc, runID, msgs); err != nil {
		t.Fatalf("reading effects from redis: %v", err)
	}
	procs := fl.all()
	rep.collectLogs(t, procs)
	rep.explain(rc, rs, runID, prefix, queue, procs)

	// Figures.
	lines := rep.figures(&ps, pub, pconn, s, procs, wall, seed)
	for _, l := range lines {
		t.Log(l)
		fmt.Println(l)
	}

	// Checks.
	if !settled {
		t.Errorf("soak: messages did not settle (see the figures)")
	}
	if got := ps.confirmed.Load(); got != int64(n) {
		t.Errorf("soak: %d of %d messages confirmed by the broker (%d abandoned)", got, n, ps.abandoned.Load())
	}
	if tg.minNodeKills > 0 && s.faultCounts()[faultNodeKill] == 0 {
		t.Errorf("soak: no node was killed: the run proves nothing about node faults")
	}
	if len(rep.missing) > 0 {
		t.Errorf("soak: %d messages lost (neither processed nor dead-lettered): %v", len(rep.missing), first(rep.missing, 20))
	}
	if len(rep.dupFail) > 0 {
		t.Errorf("soak: %d messages had their effect run more than once without a crash between effect and done mark to explain it:\n%s",
			len(rep.dupFail), strings.Join(first(rep.dupFail, 20), "\n"))
	}
	if len(rep.permanentProcessed) > 0 {
		t.Errorf("soak: permanent messages whose effect ran: %v", first(rep.permanentProcessed, 20))
	}
	if len(rep.unknownDLQ) > 0 {
		t.Errorf("soak: dead letters that are no message of this run: %v", first(rep.unknownDLQ, 20))
	}
	for _, e := range fl.unexpectedExits() {
		t.Errorf("soak: worker crash: %s", e)
	}
	s.mu.Lock()
	drainProblems = append(drainProblems, s.faultErrs...)
	s.mu.Unlock()
	for _, e := range drainProblems {
		t.Errorf("soak: graceful stop: %s", e)
	}
	if t.Failed() && *flagLogDir == "" {
		t.Logf("soak: the worker logs go with the temporary directory; rerun with -soak.seed=%d -soak.logdir=DIR to keep them", seed)
	}
	for name, pl := range rep.logs {
		for _, e := range pl.errors {
			t.Logf("soak: %s logged an error: %s", name, e)
		}
		if pl.bad > 0 {
			t.Logf("soak: %s: %d lines that are not JSON, e.g. %q", name, pl.bad, pl.badSample)
		}
	}
}

// topology is what the soak workers declare for queue, built the same way.
func topology(t *testing.T, queue string) broker.Topology {
	t.Helper()
	w, err := worker.New(worker.Config{
		Logger: zap.NewNop(), RetryDelays: retryDelays, MaxAttempts: 4,
		QueueType: broker.Quorum, Dedupe: worker.DedupeOff,
	})
	if err != nil {
		t.Fatal(err)
	}
	noop := worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })
	if err := w.Handle(worker.Route{Queue: queue, Handler: noop}); err != nil {
		t.Fatal(err)
	}
	return w.Topology()
}

// publishAll publishes msgs at rate per second with 8 publishers; each
// message is published again until the broker confirms it.
func publishAll(ctx context.Context, pub *broker.Publisher, queue string, msgs []soakMsg, rate float64, ps *pubStats) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				publishOne(ctx, pub, queue, msgs[i], ps)
			}
		}()
	}
	t0 := time.Now()
loop:
	for i := range msgs {
		if rate > 0 {
			if wait := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					break loop
				}
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
}

func publishOne(ctx context.Context, pub *broker.Publisher, queue string, m soakMsg, ps *pubStats) {
	body, _ := json.Marshal(m)
	for {
		ps.attempts.Add(1)
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := pub.Publish(pctx, "", queue, broker.Message{MessageID: m.ID, ContentType: "application/json", Body: body})
		cancel()
		if err == nil {
			ps.confirmed.Add(1)
			return
		}
		ps.errors.Add(1)
		ps.mu.Lock()
		if len(ps.samples) < 5 {
			ps.samples = append(ps.samples, err.Error())
		}
		ps.mu.Unlock()
		if ctx.Err() != nil {
			ps.abandoned.Add(1)
			return
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// injectFaults injects one fault at a time, at random gaps, until stop.
// The kinds come from a shuffled deck, so every kind comes up once in
// every len(faultKinds) faults.
func (s *soak) injectFaults(stop <-chan struct{}) {
	var deck []string
	for {
		gap := time.Duration(float64(*flagFaultGap) * (0.5 + s.rng.Float64()))
		t := time.NewTimer(gap)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		if len(deck) == 0 {
			deck = append([]string(nil), s.kinds...)
			s.rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
			// A node kill opens every deck, so that the kills come
			// while messages flow rather than only once all settled.
			for i, k := range deck {
				if k == faultNodeKill {
					deck[0], deck[i] = deck[i], deck[0]
				}
			}
		}
		kind := deck[0]
		deck = deck[1:]
		if kind == faultPublisherCut && closed(s.pubDone) {
			continue // nothing left to publish
		}
		s.inject(kind)
	}
}

func (s *soak) inject(kind string) {
	s.mu.Lock()
	s.timeline = append(s.timeline, faultAt{at: time.Now(), kind: kind})
	s.mu.Unlock()
	sl := s.fleet.slots[s.rng.IntN(len(s.fleet.slots))]
	what := ""
	switch kind {
	case faultAMQPCut:
		sl.amqp.Cut()
		what = fmt.Sprintf("cut the broker links of worker slot %d", sl.idx)
	case faultRedisCut:
		sl.redis.Cut()
		what = fmt.Sprintf("cut the redis links of worker slot %d", sl.idx)
	case faultPublisherCut:
		s.pubProxy.Cut()
		what = "cut the publisher's link"
	case faultSIGKILL:
		pause := time.Duration(s.rng.IntN(500)) * time.Millisecond
		sl.mu.Lock()
		old := sl.cur
		if old != nil && !old.exited() {
			kill(old)
			old.backlogAtKill = int(s.backlog.Load())
		}
		time.Sleep(pause)
		p, err := s.fleet.start(sl)
		sl.mu.Unlock()
		if err != nil {
			s.faultErr(fmt.Sprintf("restarting slot %d after SIGKILL: %v", sl.idx, err))
			return
		}
		what = fmt.Sprintf("SIGKILL %s, started %s after %s", nameOf(old), p.name, pause)
	case faultSIGTERM, faultSIGTERMPartitioned, faultSIGTERMRedisDown:
		sl.mu.Lock()
		old := sl.cur
		took := time.Duration(0)
		if old != nil && !old.exited() {
			// Let it finish starting: SIGTERM during start-up makes Run
			// return the start-up error, by design.
			waitRunning(old, 15*time.Second)
			switch kind {
			case faultSIGTERMPartitioned:
				sl.amqp.Refuse(true)
			case faultSIGTERMRedisDown:
				s.redis.kill()
			}
			t0 := time.Now()
			if msg := termChecked(old, drainTimeout); msg != "" {
				s.faultErr(msg)
			}
			took = time.Since(t0)
			switch kind {
			case faultSIGTERMPartitioned:
				sl.amqp.Refuse(false)
			case faultSIGTERMRedisDown:
				s.restartRedis()
			}
		}
		p, err := s.fleet.start(sl)
		sl.mu.Unlock()
		if err != nil {
			s.faultErr(fmt.Sprintf("restarting slot %d after SIGTERM: %v", sl.idx, err))
			return
		}
		what = fmt.Sprintf("SIGTERM %s (drained in %s), started %s", nameOf(old), took.Round(time.Millisecond), p.name)
	case faultAMQPPartition:
		d := time.Duration(500+s.rng.IntN(2500)) * time.Millisecond
		sl.amqp.Refuse(true)
		time.Sleep(d)
		sl.amqp.Refuse(false)
		what = fmt.Sprintf("worker slot %d cut off from the broker for %s", sl.idx, d)
	case faultNodeKill:
		// One node at a time: the fault ends when the node serves AMQP
		// again, so the next node fault finds all three running.
		node := s.nextNode
		s.nextNode = node%3 + 1
		underLoad := !closed(s.pubDone) || s.backlog.Load() > 0
		down := time.Duration(500+s.rng.IntN(2500)) * time.Millisecond
		if _, err := s.cluster.Do("kill", strconv.Itoa(node)); err != nil {
			s.faultErr(fmt.Sprintf("killing node %d: %v", node, err))
			return
		}
		time.Sleep(down)
		t0 := time.Now()
		if _, err := s.cluster.Do("start", strconv.Itoa(node)); err != nil {
			s.faultErr(fmt.Sprintf("starting node %d again: %v", node, err))
			return
		}
		back := time.Since(t0)
		s.mu.Lock()
		s.nodeDown = append(s.nodeDown, down+back)
		if underLoad {
			s.nodeKillsUnderLoad++
		}
		s.mu.Unlock()
		what = fmt.Sprintf("SIGKILL node %d (publishing or backlog: %v), started again after %s, serving AMQP %s later", node, underLoad, down, back.Round(time.Millisecond))
	case faultRedisCrash:
		down := time.Duration(200+s.rng.IntN(3800)) * time.Millisecond // sometimes longer than the 3s lease
		s.redis.kill()
		time.Sleep(down)
		s.restartRedis()
		what = fmt.Sprintf("SIGKILL redis, restarted after %s", down)
	}
	s.mu.Lock()
	s.faults[kind]++
	s.mu.Unlock()
	s.logf("fault %s: %s", kind, what)
}

func (s *soak) restartRedis() {
	var err error
	for try := 0; try < 3; try++ {
		if err = s.redis.start(); err == nil {
			return
		}
	}
	s.faultErr(fmt.Sprintf("restarting redis: %v", err))
}

// faultAt is a fault and when it began.
type faultAt struct {
	at   time.Time
	kind string
}

func (s *soak) faultTimeline() []faultAt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]faultAt(nil), s.timeline...)
}

func (s *soak) faultErr(msg string) {
	s.logf("fault problem: %s", msg)
	s.mu.Lock()
	s.faultErrs = append(s.faultErrs, msg)
	s.mu.Unlock()
}

func (s *soak) faultCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.faults))
	for k, v := range s.faults {
		out[k] = v
	}
	return out
}

func nameOf(p *proc) string {
	if p == nil {
		return "(none)"
	}
	return p.name
}

// status is a progress reading.
type status struct {
	ok        bool // the broker and redis answered
	processed int  // ids whose effect happened
	dlq       int  // messages in the dead-letter queue
	backlog   int  // ready messages in the queue and its tiers
}

func (st status) String() string {
	return fmt.Sprintf("processed=%d dead-lettered=%d backlog=%d read_ok=%v", st.processed, st.dlq, st.backlog, st.ok)
}

func (s *soak) status(inspect *broker.Conn, rc *redis.Client, queues []string, dlq, runID string) status {
	var st status
	backlog, err := countReady(inspect, queues)
	if err != nil {
		return st
	}
	dlqN, err := countReady(inspect, []string{dlq})
	if err != nil {
		return st
	}
	st.backlog, st.dlq = backlog, dlqN
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := rc.SCard(ctx, "soak:"+runID+":processed").Result()
	if err == nil {
		st.ok, st.processed = true, int(n)
	}
	return st
}

// countReady sums the ready messages of queues.
func countReady(c *broker.Conn, queues []string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	total := 0
	for _, q := range queues {
		info, err := c.Inspect(ctx, q)
		if err != nil {
			return 0, err
		}
		total += info.Messages
	}
	return total, nil
}

// report is what the soak found.
type report struct {
	n      int
	kindOf map[string]string
	plan   map[string]int

	dlqMsgs     int
	dlqIDs      map[string]int
	dlqReasons  map[string]int // reason -> messages
	unknownDLQ  []string
	leftover    map[string]int
	leftoverIDs map[string]bool

	effects            map[string]int
	effectsTotal       int
	processed          int
	missing            []string
	permanentProcessed []string
	permanentDLQ       int
	otherDLQ           []string // non-permanent ids dead-lettered and never processed
	processedAndDLQ    []string

	logs map[string]*procLog

	dupIDs       int            // ids with an effect count > 1
	dupExtra     int            // effects beyond the first
	dupExplained []string       // ids whose repeats are all in the two-writes window
	dupCauses    map[string]int // their repeated effects by cause
	dupFail      []string       // ids with a repeat that nothing above explains
	dupFailCause map[string]int
}

func (r *report) collectDLQ(dl []amqp.Delivery) {
	r.dlqIDs, r.dlqReasons = map[string]int{}, map[string]int{}
	r.leftover, r.leftoverIDs = map[string]int{}, map[string]bool{}
	for _, d := range dl {
		r.dlqMsgs++
		id := bodyID(d.Body, d.MessageId)
		if _, ok := r.kindOf[id]; !ok {
			r.unknownDLQ = append(r.unknownDLQ, id)
			continue
		}
		r.dlqIDs[id]++
		reason, _ := d.Headers[worker.HeaderDeadLetterReason].(string)
		if reason == "" {
			reason = "broker:" + fmt.Sprint(d.Headers["x-first-death-reason"])
		}
		r.dlqReasons[reason]++
	}
}

// dlqTwice lists the ids with more than one dead letter.
func (r *report) dlqTwice() []string {
	var out []string
	for id, c := range r.dlqIDs {
		if c > 1 {
			out = append(out, fmt.Sprintf("%s(x%d)", id, c))
		}
	}
	sort.Strings(out)
	return out
}

func (r *report) collectEffects(rc *redis.Client, runID string, msgs []soakMsg) error {
	r.effects = make(map[string]int, len(msgs))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for lo := 0; lo < len(msgs); lo += 500 {
		hi := min(lo+500, len(msgs))
		keys := make([]string, 0, hi-lo)
		for _, m := range msgs[lo:hi] {
			keys = append(keys, "soak:"+runID+":effect:"+m.ID)
		}
		vals, err := rc.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v == nil {
				continue
			}
			c, err := strconv.Atoi(fmt.Sprint(v))
			if err != nil {
				return fmt.Errorf("effect of %s: %v", msgs[lo+i].ID, err)
			}
			r.effects[msgs[lo+i].ID] = c
		}
	}
	for _, m := range msgs {
		c := r.effects[m.ID]
		r.effectsTotal += c
		inDLQ := r.dlqIDs[m.ID] > 0
		switch {
		case m.Kind == "permanent" && c > 0:
			r.permanentProcessed = append(r.permanentProcessed, m.ID)
		case m.Kind == "permanent" && inDLQ:
			r.permanentDLQ++
		case c > 0 && inDLQ:
			r.processedAndDLQ = append(r.processedAndDLQ, m.ID)
		case c == 0 && inDLQ:
			r.otherDLQ = append(r.otherDLQ, m.ID+"("+m.Kind+")")
		}
		if c > 0 {
			r.processed++
		}
		if c == 0 && !inDLQ {
			where := ""
			if r.leftoverIDs[m.ID] {
				where = ", still queued"
			}
			r.missing = append(r.missing, m.ID+"("+m.Kind+where+")")
		}
	}
	return nil
}

func (r *report) collectLogs(t *testing.T, procs []*proc) {
	r.logs = map[string]*procLog{}
	for _, p := range procs {
		pl, err := parseLog(p.logPath)
		if err != nil {
			t.Errorf("reading the log of %s: %v", p.name, err)
			continue
		}
		r.logs[p.name] = pl
	}
}

// Causes of a repeated effect. The first three are the two-writes window
// of DESIGN.md (an effect and its done mark are two writes; a crash
// between them repeats the effect): they are counted and reported, and do
// not fail the soak. Every other cause fails it.
const (
	causeWorkerCrash = "worker SIGKILLed between its effect and the done mark"
	causeLostReply   = "effect committed but its reply lost (Redis killed); the handler failed and was retried"
	causeRedisCrash  = "Redis killed between the effect and the done mark; warren acked without the mark"
)

// explain looks at every id whose effect ran more than once: each effect
// that was followed by another must have lost its done mark. Accepted
// reasons, all crashes between the effect and the done mark:
//   - its worker was SIGKILLed before it stored the mark (it then logged
//     no ack for the message: the ack is logged after the done mark);
//   - Redis was killed after committing the effect and before replying,
//     so the handler itself failed (it logged the effect as uncertain
//     while Redis was down) and warren rightly ran it again;
//   - Redis was killed after the effect and before the done mark, so
//     warren acked without the mark ("done mark not stored", logged while
//     Redis was down) and a later copy of the message ran again.
func (r *report) explain(rc *redis.Client, redisSrv *redisServer, runID, prefix, queue string, procs []*proc) {
	byName := map[string]*proc{}
	for _, p := range procs {
		byName[p.name] = p
	}
	r.dupCauses, r.dupFailCause = map[string]int{}, map[string]int{}
	ids := make([]string, 0)
	for id, c := range r.effects {
		if c > 1 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range ids {
		r.dupIDs++
		r.dupExtra += r.effects[id] - 1
		tokens, err := rc.LRange(ctx, "soak:"+runID+":by:"+id, 0, -1).Result()
		if err != nil {
			r.dupFail = append(r.dupFail, fmt.Sprintf("%s: reading who ran it: %v", id, err))
			r.dupFailCause["unreadable"]++
			continue
		}
		key := dedupe.Key(prefix, queue, id)
		var causes []string
		explained := len(tokens) > 1
		idCauses := map[string]int{}
		for j, tok := range tokens {
			if j == len(tokens)-1 {
				break
			}
			inst := strings.SplitN(tok, "|", 2)[0]
			p, pl := byName[inst], r.logs[inst]
			cause := "unexplained"
			switch {
			case p == nil || pl == nil:
				cause = "unknown instance"
			case !pl.uncertain[tok].IsZero() && redisSrv.downNear(pl.uncertain[tok], 10*time.Second):
				cause = causeLostReply
			case !pl.uncertain[tok].IsZero():
				cause = "the handler never learned that its effect write succeeded, although Redis was not down"
			case p.crashed() && !pl.acked[id]:
				cause = causeWorkerCrash
			case !pl.doneLost[key].IsZero() && redisSrv.downNear(pl.doneLost[key], 10*time.Second):
				cause = causeRedisCrash
			case !pl.doneLost[key].IsZero():
				cause = "done mark not stored although Redis was not down"
			case pl.claimLost[key]:
				cause = "claim lease expired while the handler ran"
			case p.crashed():
				cause = "acked by a worker that was SIGKILLed later"
			}
			if cause != causeWorkerCrash && cause != causeLostReply && cause != causeRedisCrash {
				explained = false
			}
			idCauses[cause]++
			causes = append(causes, tok+": "+cause)
		}
		desc := fmt.Sprintf("%s(%s) effect x%d: %s", id, r.kindOf[id], r.effects[id], strings.Join(causes, "; "))
		if explained {
			r.dupExplained = append(r.dupExplained, desc)
			for c, n := range idCauses {
				r.dupCauses[c] += n
			}
			continue
		}
		r.dupFail = append(r.dupFail, desc)
		for c, n := range idCauses {
			r.dupFailCause[c] += n
		}
	}
}

func (r *report) figures(ps *pubStats, pub *broker.Publisher, pconn *broker.Conn, s *soak, procs []*proc, wall time.Duration, seed int64) []string {
	outcomes := map[string]int{}
	var deliveries, redelivered, reconnects, connLost, stale, spent, panics, storeDown, extendFail, confirmedAfterErr, uncertain int
	unspent := map[string]int{}
	for _, pl := range r.logs {
		for k, v := range pl.outcomes {
			outcomes[k] += v
		}
		for k, v := range pl.unspent {
			unspent[k] += v
		}
		deliveries += pl.deliveries
		redelivered += pl.redelivered
		reconnects += pl.reconnects
		connLost += pl.connLost
		stale += pl.stale
		spent += pl.spent
		panics += pl.panics
		storeDown += pl.storeDown
		extendFail += pl.extendFail
		confirmedAfterErr += pl.confirmed
		uncertain += len(pl.uncertain)
	}
	var killed, termed, escalated int
	for _, p := range procs {
		how, esc := p.stopInfo()
		switch how {
		case "sigkill":
			killed++
		case "sigterm":
			termed++
		}
		if esc {
			escalated++
		}
	}
	ps.mu.Lock()
	samples := append([]string(nil), ps.samples...)
	ps.mu.Unlock()
	leftover := 0
	for _, v := range r.leftover {
		leftover += v
	}
	f := func(format string, args ...any) string { return "SOAK " + fmt.Sprintf(format, args...) }
	lines := []string{
		f("seed=%d wall_time=%s", seed, wall.Round(time.Millisecond)),
		f("published=%d kinds=%v", r.n, r.plan),
		f("confirmed=%d (publisher stats: confirmed=%d nacked=%d returned=%d) publish_attempts=%d publish_errors_retried=%d abandoned=%d publisher_reconnects=%d",
			ps.confirmed.Load(), pub.Stats().Confirmed.Load(), pub.Stats().Nacked.Load(), pub.Stats().Returned.Load(),
			ps.attempts.Load(), ps.errors.Load(), ps.abandoned.Load(), pconn.Reconnects()),
		f("processed=%d (effects total=%d) dead_lettered_ids=%d (dlq messages=%d, permanent=%d/%d, reasons=%v) missing=%d",
			r.processed, r.effectsTotal, len(r.dlqIDs), r.dlqMsgs, r.permanentDLQ, r.plan["permanent"], r.dlqReasons, len(r.missing)),
		f("non_permanent_dead_lettered=%d %v processed_and_dead_lettered=%d %v dead_lettered_twice=%d %v",
			len(r.otherDLQ), first(r.otherDLQ, 10), len(r.processedAndDLQ), first(r.processedAndDLQ, 10),
			len(r.dlqTwice()), first(r.dlqTwice(), 10)),
		f("duplicated_effects: ids=%d extra_effects=%d", r.dupIDs, r.dupExtra),
		f("  explained (two-writes window, effect repeated after a crash between effect and done mark): ids=%d worker_sigkill=%d redis_crash_lost_effect_reply=%d redis_crash_before_done_mark=%d",
			len(r.dupExplained), r.dupCauses[causeWorkerCrash], r.dupCauses[causeLostReply], r.dupCauses[causeRedisCrash]),
		f("  unexplained (successful effect run twice): ids=%d causes=%v", len(r.dupFail), r.dupFailCause),
		f("duplicates_suppressed=%d (outcome duplicate) deliveries=%d redeliveries=%d (broker flag) outcomes=%v",
			outcomes["duplicate"], deliveries, redelivered, outcomes),
		f("retries_spent=%d retries_unspent=%v store_unreachable=%d claim_extend_failures=%d panics_recovered=%d stale_results_dropped=%d",
			spent, unspent, storeDown, extendFail, panics, stale),
		f("effect_writes_confirmed_after_error=%d effect_writes_uncertain=%d", confirmedAfterErr, uncertain),
		f("reconnects=%d (connection lost=%d) worker_processes=%d sigkilled=%d sigtermed=%d sigterm_escalated=%d",
			reconnects, connLost, len(procs), killed, termed, escalated),
		f("faults=%v", s.faultCounts()),
		f("left_in_queues=%d %v", leftover, r.leftover),
	}
	if s.cluster != nil {
		s.mu.Lock()
		outages := make([]string, len(s.nodeDown))
		for i, d := range s.nodeDown {
			outages[i] = d.Round(100 * time.Millisecond).String()
		}
		under := s.nodeKillsUnderLoad
		s.mu.Unlock()
		lines = append(lines, f("cluster: node_kills=%d (while publishing or with a backlog: %d) node_outages=%v (kill to serving AMQP again)",
			s.faultCounts()[faultNodeKill], under, outages))
	}
	if len(samples) > 0 {
		lines = append(lines, f("publish_error_samples=%q", samples))
	}
	lines = append(lines, handOverFigures(handOvers(procs, r.logs), s.faultTimeline(), workerDuration("WARREN_DEDUPE_LEASE"), retryDelays[0])...)
	for _, d := range first(r.dupExplained, 10) {
		lines = append(lines, f("explained_duplicate %s", d))
	}
	return lines
}

// workerDuration is the duration workerEnv sets for key, or 0.
func workerDuration(key string) time.Duration {
	for _, kv := range workerEnv {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			d, _ := time.ParseDuration(v)
			return d
		}
	}
	return 0
}

func bodyID(body []byte, fallback string) string {
	var m soakMsg
	if json.Unmarshal(body, &m) == nil && m.ID != "" {
		return m.ID
	}
	return fallback
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func first(xs []string, n int) []string {
	if len(xs) > n {
		return xs[:n]
	}
	return xs
}

// liveNode returns the first of nodes that accepts a TCP connection, or
// the first one (whose dial then names the problem).
func liveNode(nodes []string) string {
	for _, n := range nodes {
		u, err := url.Parse(n)
		if err != nil {
			continue
		}
		c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
		if err == nil {
			_ = c.Close()
			return n
		}
	}
	return nodes[0]
}
