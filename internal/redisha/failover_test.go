//go:build redisha

package redisha

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// The load of one failover run: n messages, each published twice (the
// copy lag messages later), so that dedupe has duplicates to stop.
const (
	numMessages = 1500
	copyLag     = 100
	publishGap  = 2 * time.Millisecond // between two publishes: ~10s of traffic
	handlerWork = 2 * time.Millisecond
	faultAt     = numMessages / 3 // the fault starts after this many originals
	settleTime  = 3 * time.Minute // for every message to run once the fault is over
)

var retryDelays = []time.Duration{200 * time.Millisecond, time.Second}

// effect is one handler run.
type effect struct {
	at      time.Time
	attempt int
}

// effects records handler runs per message id.
type effects struct {
	mu   sync.Mutex
	runs map[string][]effect
}

func (e *effects) record(id string, attempt int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runs[id] = append(e.runs[id], effect{at: time.Now(), attempt: attempt})
}

func (e *effects) distinct() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.runs)
}

// readiness samples worker.Ready every 2ms and records each change.
type readiness struct {
	mu      sync.Mutex
	changes []change
}

type change struct {
	at    time.Time
	ready bool
}

func watchReady(w *worker.Worker) (*readiness, func()) {
	r := &readiness{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := true
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if v := w.Ready(); v != last {
				last = v
				r.mu.Lock()
				r.changes = append(r.changes, change{at: time.Now(), ready: v})
				r.mu.Unlock()
			}
		}
	}()
	return r, func() { cancel(); <-done }
}

// timeline describes the changes relative to t0, the first max of them.
func (r *readiness) timeline(t0 time.Time, max int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for i, c := range r.changes {
		if i == max {
			fmt.Fprintf(&b, " ... (%d changes)", len(r.changes))
			break
		}
		state := "ready"
		if !c.ready {
			state = "NOT ready"
		}
		fmt.Fprintf(&b, " +%s %s;", c.at.Sub(t0).Round(time.Millisecond), state)
	}
	return b.String()
}

// summary returns how often readiness went false, the time it spent
// false in all, and the longest single stretch.
func (r *readiness) summary() (flips int, total, longest time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var since time.Time
	for _, c := range r.changes {
		if !c.ready {
			flips++
			since = c.at
			continue
		}
		if !since.IsZero() {
			d := c.at.Sub(since)
			total += d
			longest = max(longest, d)
			since = time.Time{}
		}
	}
	return flips, total, longest
}

// fault is what a run does to Redis: it returns once the set-up has
// failed over, and reports whether the worker must have lost Redis for a
// while (a killed master), so that readiness must flip.
type fault struct {
	name   string
	outage bool
	run    func(t *testing.T)
	// master, when set, names the set-up's master as its sentinels see
	// it, "" when they do not answer (see watchSwitches).
	master func() string
}

// switchLead is how long before the sentinels name a new master its
// failover may have begun: down-after-milliseconds (1s here) and an
// election. Writes the deposed master took from then on may be lost.
const switchLead = 2 * time.Second

// lossWindow is a time in which writes to a deposed master may have been
// lost: from about when its failover began until it answered as a
// replica (or, dead, last answered as a master).
type lossWindow struct{ from, to time.Time }

// watchSwitches follows master (every 50ms) after a fault, and stop
// returns the loss windows of the master switches it saw. A fault can
// set off another failover: here, sentinels with a 1s down-after, on a
// loaded machine, have taken a freshly promoted master for down a second
// later and promoted another replica, while the deposed one took writes
// for 10s more, all discarded when it became a replica. stop may be
// called more than once.
func watchSwitches(master func() string) (stop func() []lossWindow) {
	const every = 50 * time.Millisecond
	done := make(chan struct{})
	result := make(chan []lossWindow, 1)
	go func() {
		type deposed struct {
			addr       string
			from, seen time.Time // seen: when it last answered as a master
		}
		var (
			wins []lossWindow
			open []deposed
			cur  string
		)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				for _, d := range open {
					wins = append(wins, lossWindow{d.from, d.seen.Add(every)})
				}
				result <- wins
				return
			case <-tick.C:
			}
			now, at := master(), time.Now()
			switch {
			case now == "": // no answer: nothing learned
			case cur == "":
				cur = now // the master the fault left
			case now != cur:
				open = append(open, deposed{addr: cur, from: at.Add(-switchLead), seen: at})
				cur = now
			}
			kept := open[:0]
			for _, d := range open {
				switch role(d.addr) {
				case "slave":
					wins = append(wins, lossWindow{d.from, time.Now()})
					continue
				case "master":
					d.seen = time.Now()
				}
				kept = append(kept, d)
			}
			open = kept
		}
	}()
	var (
		once sync.Once
		wins []lossWindow
	)
	return func() []lossWindow {
		once.Do(func() {
			close(done)
			wins = <-result
		})
		return wins
	}
}

// failoverRun runs a worker with dedupe on against url, publishes every
// message twice while f strikes, and checks that no message was lost and
// that every duplicate effect is explained by the failover.
func failoverRun(t *testing.T, url string, f fault) {
	heal(t)                       // healthy before
	t.Cleanup(func() { heal(t) }) // and after: what the fault killed runs again
	ctx := context.Background()
	queue := testenv.Name(t)
	admin := testenv.NewAdmin(t)
	admin.DeleteQueues(queue, retry.DLQ(queue))
	for _, d := range retryDelays {
		admin.DeleteQueues(retry.TierQueue(queue, d))
	}
	rdb := client(t, url)
	cfg := worker.Config{
		AMQPURL:         testenv.AMQPURL(),
		RedisURL:        url,
		Logger:          zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		RetryDelays:     retryDelays,
		MaxAttempts:     5,
		HandlerTimeout:  2 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Dedupe:          worker.DedupeOn,
		DedupeLease:     3 * time.Second,
		DedupePrefix:    queue,
		Concurrency:     8,
		Prefetch:        64,
	}
	deletePrefix(t, rdb, queue)
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eff := &effects{runs: map[string][]effect{}}
	err = w.Handle(worker.Route{Queue: queue, Handler: worker.HandlerFunc(func(ctx context.Context, d *worker.Delivery) error {
		time.Sleep(handlerWork)
		eff.record(d.MessageID, d.Attempt)
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(runCtx) }()
	stopped := false
	stopWorker := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("worker Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("worker did not stop within 60s")
		}
	}
	t.Cleanup(stopWorker)
	waitFor(t, 30*time.Second, "the worker to be ready", w.Ready)
	ready, stopWatch := watchReady(w)
	defer stopWatch()

	id := func(i int) string { return fmt.Sprintf("m-%05d", i) }
	reachedFault := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		// The publisher runs beside the fault, so that traffic goes on
		// while Redis fails over.
		defer close(pubDone)
		publish := func(id string) bool {
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := w.Publish(pctx, "", queue, broker.Message{MessageID: id, Body: []byte(id)}); err != nil {
				t.Errorf("publish %s: %v", id, err)
				return false
			}
			return true
		}
		for i := 0; i < numMessages+copyLag; i++ {
			if i < numMessages && !publish(id(i)) {
				return
			}
			if i >= copyLag && !publish(id(i-copyLag)) { // the copy: dedupe must stop it
				return
			}
			if i == faultAt {
				close(reachedFault)
			}
			time.Sleep(publishGap)
		}
	}()
	select {
	case <-reachedFault:
	case <-pubDone:
		t.Fatal("the publisher stopped before the fault")
	}
	faultStart := time.Now()
	f.run(t)
	faultEnd := time.Now()
	t.Logf("%s: failed over in %s", f.name, faultEnd.Sub(faultStart).Round(time.Millisecond))
	var switches func() []lossWindow
	if f.master != nil {
		switches = watchSwitches(f.master)
		t.Cleanup(func() { switches() })
	}
	<-pubDone
	if t.Failed() {
		t.FailNow()
	}

	waitFor(t, settleTime, "every message to run", func() bool { return eff.distinct() == numMessages })
	// Then every copy has settled too: the queue and its tiers stay empty.
	waitFor(t, settleTime, "the queue and its tiers to be empty", func() bool {
		n := admin.Count(queue)
		for _, d := range retryDelays {
			n += admin.Count(retry.TierQueue(queue, d))
		}
		return n == 0
	})
	waitFor(t, 30*time.Second, "the worker to be ready again", w.Ready)
	// A duplicate is explained by the failover when its first run came
	// before the failover ended, or inside the loss window of a further
	// switch of the master.
	var again []lossWindow
	if switches != nil {
		again = switches()
		for _, w := range again {
			t.Logf("%s: the sentinels switched the master again after the failover; writes from +%s to +%s may be lost",
				f.name, w.from.Sub(faultStart).Round(time.Millisecond), w.to.Sub(faultStart).Round(time.Millisecond))
		}
	}
	explained := func(at time.Time) bool {
		if at.Before(faultEnd) {
			return true
		}
		for _, w := range again {
			if !at.Before(w.from) && at.Before(w.to) {
				return true
			}
		}
		return false
	}
	stopWatch() // before the worker stops: that makes it not ready too
	stopWorker()
	if n := admin.Count(retry.DLQ(queue)); n != 0 {
		t.Errorf("%d messages were dead-lettered, want 0", n)
	}

	// 0 lost; every duplicate effect must come from the failover: its
	// first run was before the set-up had failed over, so its done mark
	// (or its claim) was written to the old master and may not have
	// reached the new one. Its copy, coming later, found no mark on the
	// new master and ran again.
	eff.mu.Lock()
	defer eff.mu.Unlock()
	lost := 0
	var dups []string
	for i := 0; i < numMessages; i++ {
		runs := eff.runs[id(i)]
		switch {
		case len(runs) == 0:
			lost++
		case len(runs) > 1:
			dups = append(dups, id(i))
			if !explained(runs[0].at) {
				t.Errorf("message %s ran %d times, the first at +%s, after the failover ended (+%s): not explained by it",
					id(i), len(runs), runs[0].at.Sub(faultStart).Round(time.Millisecond), faultEnd.Sub(faultStart).Round(time.Millisecond))
			}
		}
	}
	if lost != 0 {
		t.Errorf("%d of %d messages never ran", lost, numMessages)
	}
	flips, total, longest := ready.summary()
	if f.outage && flips == 0 {
		t.Errorf("%s: readiness never went false while the master was down", f.name)
	}
	t.Logf("%s: readiness (times from the fault's start):%s", f.name, ready.timeline(faultStart, 60))
	sort.Strings(dups)
	t.Logf("%s: %d messages, %d copies; lost %d; duplicate effects %d (done marks or claims written to the old master and lost in the failover) %v",
		f.name, numMessages, numMessages, lost, len(dups), dups)
	fmt.Printf("REDISHA case=%s messages=%d lost=%d duplicate_effects=%d failover=%s not_ready_flips=%d not_ready_total=%s not_ready_longest=%s\n",
		f.name, numMessages, lost, len(dups), faultEnd.Sub(faultStart).Round(time.Millisecond), flips,
		total.Round(time.Millisecond), longest.Round(time.Millisecond))
}

// ---------------------------------------------------------------- Sentinel

const masterName = "warren"

// sentinelClient is a client of the first sentinel of url.
func sentinelClient(t *testing.T, url string) *redis.SentinelClient {
	t.Helper()
	hosts := strings.TrimPrefix(url, "redis-sentinel://")
	hosts = hosts[strings.LastIndexByte(hosts, '@')+1:]
	first := strings.Split(strings.Split(hosts, "/")[0], ",")[0]
	c := redis.NewSentinelClient(&redis.Options{Addr: first})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func sentinelMaster(t *testing.T, s *redis.SentinelClient) string {
	t.Helper()
	addr, err := s.GetMasterAddrByName(context.Background(), masterName).Result()
	if err != nil {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v", err)
	}
	return addr[0] + ":" + addr[1]
}

// masterOf returns a function naming the master that the sentinels of s
// name now, "" when they do not answer.
func masterOf(s *redis.SentinelClient) func() string {
	return func() string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		addr, err := s.GetMasterAddrByName(ctx, masterName).Result()
		if err != nil || len(addr) < 2 {
			return ""
		}
		return addr[0] + ":" + addr[1]
	}
}

// waitNewMaster waits until the sentinels name another master than old
// and it answers as a master.
func waitNewMaster(t *testing.T, s *redis.SentinelClient, old string) string {
	t.Helper()
	var now string
	waitFor(t, time.Minute, "the sentinels to promote a replica", func() bool {
		addr, err := s.GetMasterAddrByName(context.Background(), masterName).Result()
		if err != nil || addr[0]+":"+addr[1] == old {
			return false
		}
		now = addr[0] + ":" + addr[1]
		return role(now) == "master"
	})
	return now
}

// role is the replication role of the server at addr, or "" when it does
// not answer.
func role(addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	s, _ := v[0].(string)
	return s
}

// kill sends SIGKILL to the redis-server at addr.
func kill(t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("INFO server of %s: %v", addr, err)
	}
	var pid int
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 1 {
		t.Fatalf("no process_id in INFO of %s", addr)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d (%s): %v", pid, addr, err)
	}
	t.Logf("killed the master %s (pid %d)", addr, pid)
}

func heal(t *testing.T) { haScript(t, "up") }

func TestSentinelManualFailover(t *testing.T) {
	url := sentinelURL(t)
	s := sentinelClient(t, url)
	failoverRun(t, url, fault{name: "sentinel-failover", master: masterOf(s), run: func(t *testing.T) {
		old := sentinelMaster(t, s)
		if err := s.Failover(context.Background(), masterName).Err(); err != nil {
			t.Errorf("SENTINEL FAILOVER: %v", err)
			return
		}
		t.Logf("sentinel: %s promoted in place of %s", waitNewMaster(t, s, old), old)
		// Until the sentinels turn the old master into a replica, it
		// takes writes that the new master never sees: the failover
		// ends when it refuses them.
		waitFor(t, time.Minute, "the old master to become a replica", func() bool { return role(old) == "slave" })
	}})
}

func TestSentinelKilledMaster(t *testing.T) {
	url := sentinelURL(t)
	s := sentinelClient(t, url)
	// No readiness flip is required: the sentinels promote a replica
	// within about 2s here, and a failover that quick can pass within
	// go-redis's own retries, so that the worker sees no failed call and
	// rightly stays ready (seen in CI: a 1.9s failover, no flip, nothing
	// logged by the worker but go-redis's dial retries). The killed
	// Cluster master, down for the node timeout and more, still must
	// flip it.
	failoverRun(t, url, fault{name: "sentinel-kill", master: masterOf(s), run: func(t *testing.T) {
		old := sentinelMaster(t, s)
		kill(t, old)
		t.Logf("sentinel: %s promoted in place of %s", waitNewMaster(t, s, old), old)
	}})
}

// ---------------------------------------------------------------- Cluster

// clusterMaster returns a master of the cluster and its replica's address.
func clusterMaster(t *testing.T, url string) (master, replica string) {
	t.Helper()
	c := client(t, url).(*redis.ClusterClient)
	slots, err := c.ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	for _, s := range slots {
		if len(s.Nodes) >= 2 {
			return s.Nodes[0].Addr, s.Nodes[1].Addr
		}
	}
	t.Fatalf("no master with a replica in %v", slots)
	return "", ""
}

func TestClusterManualFailover(t *testing.T) {
	url := clusterURL(t)
	failoverRun(t, url, fault{name: "cluster-failover", run: func(t *testing.T) {
		master, replica := clusterMaster(t, url)
		c := redis.NewClient(&redis.Options{Addr: replica})
		defer c.Close()
		if err := c.ClusterFailover(context.Background()).Err(); err != nil {
			t.Errorf("CLUSTER FAILOVER on %s: %v", replica, err)
			return
		}
		waitFor(t, time.Minute, "the replica to take over", func() bool { return role(replica) == "master" && role(master) == "slave" })
		t.Logf("cluster: %s took over from %s", replica, master)
	}})
}

func TestClusterKilledMaster(t *testing.T) {
	url := clusterURL(t)
	failoverRun(t, url, fault{name: "cluster-kill", outage: true, run: func(t *testing.T) {
		master, replica := clusterMaster(t, url)
		kill(t, master)
		waitFor(t, time.Minute, "the replica to take over", func() bool { return role(replica) == "master" })
		t.Logf("cluster: %s took over from the killed %s", replica, master)
	}})
}
