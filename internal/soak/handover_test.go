package soak

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"
)

// handOver is what became of the messages a SIGKILLed worker had in
// flight (delivered to it, no outcome logged) when it was killed.
type handOver struct {
	proc     string
	at       time.Time // the kill
	backlog  int       // ready messages in the queues at the kill (last reading)
	inFlight int
	// completed elsewhere: acked (effect and done mark), acked as a
	// duplicate (the killed worker had stored the mark), or dead-lettered
	// by another process after the kill; took is from the kill to each.
	took []time.Duration
	// ran is, per message that ran again elsewhere, from the kill to the
	// delivery of the first copy that another process ran (its outcome's
	// time less its duration): the hand-over proper. A completion can
	// come later, after the handler's own failures and retries.
	ran []time.Duration
	// self: no other process settled it after the kill: the killed
	// worker had settled it but was killed before it logged the outcome,
	// or (after a cut channel) another process had settled it before.
	self int
}

// all is the time from the kill until every in-flight message was
// completed elsewhere.
func (h handOver) all() time.Duration {
	if len(h.took) == 0 {
		return 0
	}
	return slices.Max(h.took)
}

// handOvers follows the in-flight messages of every SIGKILLed process
// through the logs of the others.
func handOvers(procs []*proc, logs map[string]*procLog) []handOver {
	var out []handOver
	for _, p := range procs {
		at := p.killTime()
		if how, _ := p.stopInfo(); how != "sigkill" || at.IsZero() || logs[p.name] == nil {
			continue
		}
		h := handOver{proc: p.name, at: at, backlog: p.backlogAtKill}
		for _, id := range inFlightAt(logs[p.name].events, at) {
			h.inFlight++
			if done := completedAfter(procs, logs, p.name, id, at); done.at.IsZero() {
				h.self++
			} else {
				h.took = append(h.took, done.at.Sub(at))
			}
			if run := ranAfter(procs, logs, p.name, id, at); !run.at.IsZero() {
				h.ran = append(h.ran, run.at.Add(-run.took).Sub(at))
			}
		}
		out = append(out, h)
	}
	return out
}

// inFlightAt lists the ids delivered and not settled in events up to t.
func inFlightAt(events []msgEvent, t time.Time) []string {
	open := map[string]bool{}
	for _, e := range events {
		if e.at.After(t) {
			break
		}
		if e.outcome == "" {
			open[e.id] = true
		} else {
			delete(open, e.id)
		}
	}
	ids := make([]string, 0, len(open))
	for id := range open {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// completedAfter is the first outcome after t by which a process other
// than skip settled id for good (ack, duplicate or dead letter), or a
// zero event.
func completedAfter(procs []*proc, logs map[string]*procLog, skip, id string, t time.Time) msgEvent {
	var first msgEvent
	for _, p := range procs {
		pl := logs[p.name]
		if p.name == skip || pl == nil {
			continue
		}
		for _, e := range pl.events {
			if e.id != id || !e.at.After(t) || (!first.at.IsZero() && !e.at.Before(first.at)) {
				continue
			}
			switch e.outcome {
			case "ack", "duplicate", "dead_letter":
				first = e
			}
		}
	}
	return first
}

// ranAfter is the first outcome after t of a copy of id that a process
// other than skip ran (not one that found its message in progress or the
// store down), or a zero event.
func ranAfter(procs []*proc, logs map[string]*procLog, skip, id string, t time.Time) msgEvent {
	var first msgEvent
	for _, p := range procs {
		pl := logs[p.name]
		if p.name == skip || pl == nil {
			continue
		}
		for _, e := range pl.events {
			if e.id != id || e.outcome == "" || !e.at.After(t) || e.kind == "in_progress" || e.kind == "store_unavailable" {
				continue
			}
			if first.at.IsZero() || e.at.Before(first.at) {
				first = e
			}
		}
	}
	return first
}

// handOverFigures are the soak report's lines on hand-overs: per kill,
// and the p50 and max over kills of the time until all of a kill's
// in-flight messages were completed elsewhere, and over messages.
func handOverFigures(hs []handOver, faults []faultAt, lease time.Duration, tier time.Duration) []string {
	f := func(format string, args ...any) string { return "SOAK " + fmt.Sprintf(format, args...) }
	var perKill, perMsg, perRan []time.Duration
	inFlight, self := 0, 0
	var lines []string
	for _, h := range hs {
		inFlight += h.inFlight
		self += h.self
		perMsg = append(perMsg, h.took...)
		perRan = append(perRan, h.ran...)
		if len(h.took) > 0 {
			perKill = append(perKill, h.all())
		}
		ran := time.Duration(0)
		if len(h.ran) > 0 {
			ran = slices.Max(h.ran)
		}
		lines = append(lines, f("  sigkill %s: backlog_at_kill=%d in_flight=%d completed_elsewhere=%d no_completion_after_kill=%d all_completed_after=%s all_ran_again_after=%s other_faults=%v",
			h.proc, h.backlog, h.inFlight, len(h.took), h.self, h.all().Round(time.Millisecond), ran.Round(time.Millisecond),
			near(faults, h.at, ran)))
	}
	head := f("sigkill_hand_over (kill to completion elsewhere; lease %s, first tier %s): kills=%d (with messages completed elsewhere %d) in_flight=%d completed_elsewhere=%d no_completion_after_kill=%d per_kill p50=%s max=%s per_message p50=%s max=%s ran_again_elsewhere p50=%s max=%s",
		lease, tier, len(hs), len(perKill), inFlight, len(perMsg), self,
		quantile(perKill, 0.5), quantile(perKill, 1), quantile(perMsg, 0.5), quantile(perMsg, 1), quantile(perRan, 0.5), quantile(perRan, 1))
	return append([]string{head}, lines...)
}

// near lists the faults other than the kill itself that began from 5s
// before the kill (a stopped worker or Redis may still be down) until
// window after it, with their offset from the kill.
func near(faults []faultAt, kill time.Time, window time.Duration) []string {
	var out []string
	for _, fa := range faults {
		d := fa.at.Sub(kill)
		theKill := fa.kind == faultSIGKILL && d > -time.Second && d <= 0 // the kill itself
		if d >= -5*time.Second && d <= window && !theKill {
			out = append(out, fmt.Sprintf("%s@%+.1fs", fa.kind, d.Seconds()))
		}
	}
	return out
}

// quantile is the q-quantile (nearest rank) of ds, rounded, or "n/a".
func quantile(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i].Round(time.Millisecond).String()
}

// TestHandOvers checks the hand-over arithmetic on made-up logs.
func TestHandOvers(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	killed := &proc{name: "w0.1", how: "sigkill", killedAt: at(1000), done: make(chan struct{})}
	other := &proc{name: "w1.1", done: make(chan struct{})}
	logs := map[string]*procLog{
		"w0.1": {events: []msgEvent{
			{at(100), "m1", "", "", 0}, {at(200), "m1", "ack", "", 0}, // settled before the kill
			{at(300), "m2", "", "", 0}, // in flight, acked elsewhere
			{at(400), "m3", "", "", 0}, // in flight, a duplicate elsewhere
			{at(500), "m4", "", "", 0}, // in flight, no one else settles it
			{at(600), "m5", "", "", 0}, {at(700), "m5", "retry", "", 0},
			{at(1100), "m6", "", "", 0}, // after the kill: not in flight
		}},
		"w1.1": {events: []msgEvent{
			{at(1010), "m2", "", "", 0}, {at(1020), "m2", "retry", "in_progress", 10 * time.Millisecond},
			{at(3000), "m2", "", "", 0}, {at(3100), "m2", "retry", "error", 100 * time.Millisecond}, // ran, failed // an in-progress round is no completion
			{at(4000), "m2", "", "", 0}, {at(4200), "m2", "ack", "", 200 * time.Millisecond},
			{at(1500), "m3", "", "", 0}, {at(1600), "m3", "duplicate", "", 100 * time.Millisecond},
			{at(900), "m4", "ack", "", 0}, // before the kill: not a hand-over
		}},
	}
	hs := handOvers([]*proc{killed, other}, logs)
	if len(hs) != 1 {
		t.Fatalf("got %d hand-overs, want 1 (one SIGKILLed process)", len(hs))
	}
	h := hs[0]
	if h.inFlight != 3 || h.self != 1 || len(h.took) != 2 {
		t.Fatalf("in flight %d, settled by itself %d, completed elsewhere %d; want 3, 1, 2", h.inFlight, h.self, len(h.took))
	}
	if h.took[0] != 3200*time.Millisecond || h.took[1] != 600*time.Millisecond || h.all() != 3200*time.Millisecond {
		t.Errorf("took %v (all %s), want [3.2s 600ms] (all 3.2s)", h.took, h.all())
	}
	if len(h.ran) != 2 || h.ran[0] != 2000*time.Millisecond || h.ran[1] != 500*time.Millisecond {
		t.Errorf("ran again %v, want [2s 500ms]", h.ran)
	}
	ds := []time.Duration{4 * time.Second, time.Second, 3 * time.Second, 2 * time.Second}
	if q50, q100 := quantile(ds, 0.5), quantile(ds, 1); q50 != "2s" || q100 != "4s" {
		t.Errorf("p50 %s max %s, want 2s 4s", q50, q100)
	}
	faults := []faultAt{{at(995), faultSIGKILL}, {at(2000), faultRedisCrash}, {at(0).Add(-10 * time.Second), faultAMQPCut}, {at(9000), faultRedisCut}}
	if got := fmt.Sprint(near(faults, at(1000), 3*time.Second)); got != "[redis_crash@+1.0s]" {
		t.Errorf("faults near the kill: %s, want [redis_crash@+1.0s]", got)
	}
	if q := quantile(nil, 0.5); q != "n/a" {
		t.Errorf("quantile of nothing = %q, want n/a", q)
	}
}
