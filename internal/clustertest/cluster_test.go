package clustertest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/internal/testenv"
)

// TestClusterQueuesReplicated: a worker on the cluster declares its queue,
// retry tiers and DLQ as quorum queues with a member on every node.
func TestClusterQueuesReplicated(t *testing.T) {
	c := testenv.NeedCluster(t)
	q := testenv.Name(t)
	deleteQueues(t, c, queueNames(q)...)
	startWorker(t, c.URL(), q, newRecord())
	want := queueNames(q)
	var got []testenv.QueueInfo
	waitUntil(t, 60*time.Second, "every queue lists three online members", func() bool {
		got = c.Queues(q)
		if len(got) != len(want) {
			return false
		}
		for _, qi := range got {
			if len(qi.Online) != 3 {
				return false
			}
		}
		return true
	})
	for _, qi := range got {
		nodes := map[int]bool{}
		for _, m := range qi.Members {
			nodes[testenv.NodeNumber(m)] = true
		}
		if qi.Type != "quorum" || len(qi.Members) != 3 || !nodes[1] || !nodes[2] || !nodes[3] {
			t.Errorf("queue %s: type %s, members %v; want quorum on nodes 1, 2 and 3", qi.Name, qi.Type, qi.Members)
		}
		t.Logf("queue %s: %s, leader %s, members %v", qi.Name, qi.Type, qi.Leader, qi.Members)
	}
}

// publisher publishes m-0, m-1, ... to queue through the default exchange
// until stop closes, each confirmed before the next, and remembers which
// were confirmed and when.
type publisher struct {
	pub       *broker.Publisher
	queue     string
	mu        sync.Mutex
	confirmed []string
	at        []time.Time
	failed    int
	next      atomic.Int64
	log       testing.TB
}

func (p *publisher) run(stop <-chan struct{}, gap time.Duration) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("m-%d", p.next.Add(1)-1)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := p.pub.Publish(ctx, "", p.queue, broker.Message{MessageID: id, Body: []byte(id)})
		cancel()
		p.mu.Lock()
		if err == nil {
			p.confirmed = append(p.confirmed, id)
			p.at = append(p.at, time.Now())
		} else {
			p.failed++
			if p.failed <= 3 || p.failed%100 == 0 {
				p.log.Logf("publish %s failed (%d so far): %v", id, p.failed, err)
			}
		}
		p.mu.Unlock()
		if gap > 0 {
			time.Sleep(gap)
		}
	}
}

func (p *publisher) snapshot() ([]string, []time.Time, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.confirmed...), append([]time.Time(nil), p.at...), p.failed
}

// firstConfirmAfter returns the time of the first confirm after t0.
func (p *publisher) firstConfirmAfter(t0 time.Time) (string, time.Time, bool) {
	ids, at, _ := p.snapshot()
	for i := range at {
		if at[i].After(t0) {
			return ids[i], at[i], true
		}
	}
	return "", time.Time{}, false
}

// TestClusterLeaderKillLosesNothing: a worker consumes and retries (every
// third message fails once) while a publisher publishes; the node that
// leads the queue is killed. Every confirmed message is handled, none is
// dead-lettered, and consumption goes on from a survivor.
func TestClusterLeaderKillLosesNothing(t *testing.T) {
	c := testenv.NeedCluster(t)
	q := testenv.Name(t)
	deleteQueues(t, c, queueNames(q)...)
	rec := newRecord()
	startWorker(t, c.URL(), q, rec)
	pconn := dial(t, c.URL(), "cluster-test-publisher")
	p := &publisher{pub: pconn.NewPublisher(), queue: q, log: t}
	defer p.pub.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.run(stop, 5*time.Millisecond) }()
	stopPublishing := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPublishing()

	waitUntil(t, 60*time.Second, "100 messages handled before the kill", func() bool { return rec.count() >= 100 })
	leader := c.Leader(q)
	t.Cleanup(func() { c.Start(leader) })
	killed := time.Now()
	c.Kill(leader)
	killReturned := time.Now()
	t.Logf("killed node %d, the leader of %s (the publisher was on %s)", leader, q, pconn.Address())

	// Consumption goes on: a message confirmed after the kill is handled.
	var firstID string
	waitUntil(t, 60*time.Second, "a message published after the kill is confirmed", func() bool {
		var ok bool
		firstID, _, ok = p.firstConfirmAfter(killReturned)
		return ok
	})
	waitOrExplain(t, c, q, 120*time.Second, "a message published after the kill is handled", func() bool {
		_, ok := rec.doneAt(firstID)
		return ok
	})
	waitUntil(t, 120*time.Second, "300 messages handled", func() bool { return rec.count() >= 300 })
	stopPublishing()
	ids, confirms, failed := p.snapshot()
	waitOrExplain(t, c, q, 120*time.Second, "every confirmed message handled", func() bool { return len(rec.missing(ids)) == 0 })
	ch := admin(t, c, survivor(leader))
	if n := messageCount(t, ch, q+".dlq"); n != 0 {
		t.Errorf("%d messages dead-lettered", n)
	}
	t.Logf("FAILOVER leader kill (node %d): publishing paused %s, consumption paused %s (longest gaps between two confirms, two handled messages)",
		leader, outage(confirms, killed).Round(time.Millisecond), outage(rec.successTimes(), killed).Round(time.Millisecond))
	rec.mu.Lock()
	t.Logf("%d messages confirmed (%d publishes failed and were not counted), all %d handled; %d handler calls, %d first attempts failed and were retried",
		len(ids), failed, len(ids), rec.calls, rec.retried)
	rec.mu.Unlock()
}

// waitOrExplain is waitUntil that, when cond does not come true, fails
// with what the cluster holds for the queue q and its tiers: messages
// stuck in a tier queue after a leader change are a broker fault that
// RabbitMQ 3.10.8 has (its at-least-once dead-letter worker does not
// recover; rabbitmq-server pull request 7677, released after 3.10.8).
func waitOrExplain(t *testing.T, c *testenv.Cluster, q string, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, qi := range c.Queues(q) {
				t.Logf("queue %s: %d messages, leader %s, online %v", qi.Name, qi.Messages, qi.Leader, qi.Online)
			}
			t.Fatalf("%s: not within %s. Messages held by a retry tier queue that do not come back "+
				"are retries whose at-least-once dead-lettering stalled in the broker after the leader change "+
				"(RabbitMQ 3.10.8; fixed in later releases): stored, not lost, but not delivered either", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustConfirmed(p *publisher) []string { ids, _, _ := p.snapshot(); return ids }

func survivor(dead int) int { return dead%3 + 1 }

// TestClusterPublishAcrossNodeRestart publishes without pause while the
// node the publisher is connected to is stopped and started again: every
// confirmed message is in the queue.
func TestClusterPublishAcrossNodeRestart(t *testing.T) {
	c := testenv.NeedCluster(t)
	q := testenv.Name(t)
	deleteQueues(t, c, q)
	pconn := dial(t, c.URL(), "cluster-test-publisher")
	if err := pconn.Declare(ctxT(t, 60*time.Second), broker.Topology{Queues: []broker.Queue{{Name: q, Type: broker.Quorum}}}); err != nil {
		t.Fatal(err)
	}
	p := &publisher{pub: pconn.NewPublisher(), queue: q, log: t}
	defer p.pub.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.run(stop, 0) }()
	stopPublishing := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPublishing()

	waitUntil(t, 60*time.Second, "200 confirms before the stop", func() bool { return len(mustConfirmed(p)) >= 200 })
	node := c.NodeOfAddress(pconn.Address())
	if node == 0 {
		t.Fatalf("publisher on %q, not a cluster node", pconn.Address())
	}
	t.Cleanup(func() { c.Start(node) })
	stopped := time.Now()
	c.Stop(node)
	stopReturned := time.Now()
	waitUntil(t, 120*time.Second, "a confirm after the stop", func() bool {
		_, _, ok := p.firstConfirmAfter(stopReturned)
		return ok
	})
	t.Logf("node %d stopped; the publisher is now on %s", node, pconn.Address())
	c.Start(node)
	started := time.Now()
	waitUntil(t, 60*time.Second, "100 confirms after the restart", func() bool {
		_, at, _ := p.snapshot()
		n := 0
		for _, a := range at {
			if a.After(started) {
				n++
			}
		}
		return n >= 100
	})
	stopPublishing()
	ids, at, failed := p.snapshot()
	maxGap := outage(at, stopped)

	ch := admin(t, c, survivor(node))
	inQueue := map[string]bool{}
	if err := ch.Qos(1000, 0, false); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(60 * time.Second)
	for len(inQueue) < len(ids) {
		select {
		case d := <-msgs:
			inQueue[d.MessageId] = true
			_ = d.Ack(false)
		case <-deadline:
			t.Fatalf("read %d distinct messages, %d confirmed", len(inQueue), len(ids))
		}
	}
	var lost []string
	for _, id := range ids {
		if !inQueue[id] {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Fatalf("%d confirmed messages lost: %v", len(lost), lost)
	}
	t.Logf("FAILOVER publisher across a node stop: %d confirmed, all found (%d publishes failed, not counted); publishing paused %s (longest gap between two confirms)",
		len(ids), failed, maxGap.Round(time.Millisecond))
}

// TestClusterWorkerFirstNodeDown starts a worker given the three
// addresses while the first node is down: it starts and works.
func TestClusterWorkerFirstNodeDown(t *testing.T) {
	c := testenv.NeedCluster(t)
	q := testenv.Name(t)
	deleteQueues(t, c, queueNames(q)...)
	t.Cleanup(func() { c.Start(1) })
	c.Kill(1)
	began := time.Now()
	rec := newRecord()
	startWorker(t, c.URL(), q, rec)
	ready := time.Since(began)
	pconn := dial(t, c.URL(), "cluster-test-publisher")
	pub := pconn.NewPublisher()
	defer pub.Close()
	var ids []string
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("m-%d", i)
		if err := pub.Publish(ctxT(t, 30*time.Second), "", q, broker.Message{MessageID: id}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	waitUntil(t, 60*time.Second, "every message handled", func() bool { return len(rec.missing(ids)) == 0 })
	t.Logf("FAILOVER first address down: worker ready %s after start, publisher on %s", ready.Round(time.Millisecond), pconn.Address())
	if n := c.NodeOfAddress(pconn.Address()); n == 1 {
		t.Fatalf("publisher on node 1, which is down")
	}
}

// TestClusterConnsRecoverTogether: a consumer connection and a publisher
// connection to one node, as a worker has, wait out their backoff while
// the node is down; when it is back, the publisher is ready within a second
// of the consumer.
func TestClusterConnsRecoverTogether(t *testing.T) {
	c := testenv.NeedCluster(t)
	const node = 3
	q := testenv.Name(t)
	deleteQueues(t, c, q)
	url := c.NodeURL(node)
	cons, consLog := dialLogged(t, url, "cluster-test-consume")
	pubc, pubLog := dialLogged(t, url, "cluster-test-publish")
	if err := cons.Declare(ctxT(t, 60*time.Second), broker.Topology{Queues: []broker.Queue{{Name: q, Type: broker.Quorum}}}); err != nil {
		t.Fatal(err)
	}
	pub := pubc.NewPublisher()
	defer pub.Close()
	if err := pub.Publish(ctxT(t, 30*time.Second), "", q, broker.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Start(node) })
	c.Stop(node)
	waitUntil(t, 30*time.Second, "both connections down", func() bool { return !cons.Connected() && !pubc.Connected() })
	// Let both backoffs grow before the node comes back.
	waitUntil(t, 120*time.Second, "both connections back off for 2s or more", func() bool {
		return backedOff(consLog, 2*time.Second) && backedOff(pubLog, 2*time.Second)
	})

	var consUp, pubUp atomic.Int64
	watch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for consUp.Load() == 0 || pubUp.Load() == 0 {
			now := time.Now().UnixNano()
			if cons.Connected() && consUp.Load() == 0 {
				consUp.Store(now)
			}
			if pubc.Connected() && pubUp.Load() == 0 {
				pubUp.Store(now)
			}
			select {
			case <-watch:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	defer func() { close(watch); wg.Wait() }()
	nodeUp := time.Now()
	c.Start(node)
	waitUntil(t, 60*time.Second, "both connections up", func() bool { return consUp.Load() != 0 && pubUp.Load() != 0 })
	if err := pub.Publish(ctxT(t, 30*time.Second), "", q, broker.Message{Body: []byte("after")}); err != nil {
		t.Fatalf("publish after the restart: %v", err)
	}
	published := time.Now()
	gap := time.Duration(pubUp.Load() - consUp.Load())
	t.Logf("RECOVERY node %d restarted: consumer conn up %s, publisher conn up %s (gap %s) after the start of the node began; a publish confirmed %s after the consumer was up",
		node, time.Unix(0, consUp.Load()).Sub(nodeUp).Round(time.Millisecond), time.Unix(0, pubUp.Load()).Sub(nodeUp).Round(time.Millisecond),
		gap.Round(time.Millisecond), published.Sub(time.Unix(0, consUp.Load())).Round(time.Millisecond))
	if gap.Abs() > time.Second {
		t.Fatalf("the publisher connection came back %s after the consumer connection; want within 1s", gap)
	}
}
