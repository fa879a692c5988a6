package dlq

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	"github.com/warrenmq/warren/broker"
)

// MaxSample bounds the example error text kept per group, in bytes.
const MaxSample = 300

// Index is what a scan learned about dead-letter queues: groups and a
// compact entry per letter, never bodies.
type Index struct {
	Queues  []QueueScan
	Built   time.Time
	groups  []*Group
	byKey   map[string]int
	entries []entry
}

// QueueScan is one queue's part of a scan.
type QueueScan struct {
	DLQ      string
	Messages int // ready when the scan began
	Read     int // letters indexed
	Missing  bool
	Err      string
}

// Group is the dead letters of one queue with one error kind and
// fingerprint.
type Group struct {
	Key         string // GroupKey(DLQ, Kind, Fingerprint)
	DLQ         string
	Kind        string
	Fingerprint string
	Sample      string // the error text of one of them, cut to MaxSample
	Count       int
	First, Last time.Time // earliest first failure and latest last failure
}

// entry is one letter in the index: about 60 bytes.
type entry struct {
	id        ID
	first     int64 // unix nanoseconds; 0 unknown
	last      int64
	group     uint32
	messageID string
}

// Entry is one indexed letter.
type Entry struct {
	ID          ID
	MessageID   string
	Group       *Group
	First, Last time.Time
}

// GroupKey names a group in URLs and filters.
func GroupKey(dlq, kind, fingerprint string) string {
	h := fnv.New64a()
	for _, s := range []string{dlq, kind, fingerprint} {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	return ID(h.Sum64()).String()
}

// ScanOptions tune Scan.
type ScanOptions struct {
	// Window is how many unacked messages each reading channel holds;
	// 0 lets broker.Browse pick one from the queue's depth.
	Window int
	// Progress, when set, is called every 1000 letters and at the end
	// of each queue.
	Progress func(done, total int)
}

// Scan reads every dead-letter queue named (by queue or DLQ name) once,
// without taking anything, and indexes its letters. A missing queue is
// reported in Index.Queues, not as an error.
func Scan(ctx context.Context, conn *broker.Conn, queues []string, o ScanOptions) (*Index, error) {
	ix := &Index{byKey: map[string]int{}}
	cache := fingerprints{}
	done := 0
	for _, q := range queues {
		qs, err := ix.scanOne(ctx, conn, Name(q), o, cache, &done)
		ix.Queues = append(ix.Queues, qs)
		if err != nil {
			return nil, err
		}
	}
	ix.Built = time.Now()
	return ix, nil
}

func (ix *Index) scanOne(ctx context.Context, conn *broker.Conn, dlq string, o ScanOptions, cache fingerprints, done *int) (QueueScan, error) {
	qs := QueueScan{DLQ: dlq}
	b, err := conn.Browse(ctx, dlq, o.Window)
	if errors.Is(err, broker.ErrNotFound) {
		qs.Missing = true
		return qs, nil
	}
	if err != nil {
		return qs, fmt.Errorf("scanning %s: %w", dlq, err)
	}
	defer b.Close()
	qs.Messages = b.Total()
	for {
		d, ok, err := b.Next(ctx)
		if err != nil {
			return qs, fmt.Errorf("scanning %s: %w", dlq, err)
		}
		if !ok {
			break
		}
		ix.add(read(d, dlq, cache))
		qs.Read++
		if *done++; o.Progress != nil && *done%1000 == 0 {
			o.Progress(*done, 0)
		}
	}
	if o.Progress != nil {
		o.Progress(*done, 0)
	}
	return qs, nil
}

func (ix *Index) add(l *Letter) {
	key := GroupKey(l.DLQ, l.Kind, l.Fingerprint)
	gi, ok := ix.byKey[key]
	if !ok {
		gi = len(ix.groups)
		ix.byKey[key] = gi
		ix.groups = append(ix.groups, &Group{Key: key, DLQ: l.DLQ, Kind: l.Kind,
			Fingerprint: l.Fingerprint, Sample: cutString(l.Error, MaxSample)})
	}
	g := ix.groups[gi]
	g.Count++
	first := l.First
	if first.IsZero() {
		first = l.Last
	}
	g.First, g.Last = earlier(g.First, first), later(g.Last, l.Last)
	ix.entries = append(ix.entries, entry{id: l.ID, first: nanos(first), last: nanos(l.Last),
		group: uint32(gi), messageID: cutString(l.MessageID, 80)})
}

// Len is the number of letters indexed.
func (ix *Index) Len() int { return len(ix.entries) }

// Group returns a group by key.
func (ix *Index) Group(key string) (*Group, bool) {
	gi, ok := ix.byKey[key]
	if !ok {
		return nil, false
	}
	return ix.groups[gi], true
}

// Groups returns page (from 0) of the groups with letters that pass f,
// largest first, counted over those letters only, and how many groups
// pass in all.
func (ix *Index) Groups(f Filter, page, perPage int) ([]Group, int) {
	counts := make([]Group, len(ix.groups))
	for i := range ix.entries {
		e := &ix.entries[i]
		g := ix.groups[e.group]
		if !ix.pass(f, e, g) {
			continue
		}
		c := &counts[e.group]
		if c.Count == 0 {
			*c = *g
			c.Count, c.First, c.Last = 0, time.Time{}, time.Time{}
		}
		c.Count++
		c.First, c.Last = earlier(c.First, unnanos(e.first)), later(c.Last, unnanos(e.last))
	}
	var out []Group
	for _, c := range counts {
		if c.Count > 0 {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	return paged(out, page, perPage), len(out)
}

// Entries returns page (from 0) of the letters that pass f, in the order
// they were read, and how many pass in all.
func (ix *Index) Entries(f Filter, page, perPage int) ([]Entry, int) {
	var out []Entry
	total := 0
	from := len(ix.entries)                                          // past the end: none shown, all counted
	if page >= 0 && perPage > 0 && page <= len(ix.entries)/perPage { // no overflow
		from = page * perPage
	}
	for i := range ix.entries {
		e := &ix.entries[i]
		g := ix.groups[e.group]
		if !ix.pass(f, e, g) {
			continue
		}
		if total >= from && total < from+perPage {
			out = append(out, Entry{ID: e.id, MessageID: e.messageID, Group: g, First: unnanos(e.first), Last: unnanos(e.last)})
		}
		total++
	}
	return out, total
}

func (ix *Index) pass(f Filter, e *entry, g *Group) bool {
	return (f.ID == 0 || f.ID == e.id) && f.matchGroup(g.DLQ, g.Kind, g.Fingerprint) && f.matchTime(unnanos(e.last))
}

func paged[T any](all []T, page, perPage int) []T {
	if perPage <= 0 {
		return all
	}
	if page < 0 || page > len(all)/perPage { // also keeps page*perPage from overflowing
		return nil
	}
	from := page * perPage
	if from >= len(all) {
		return nil
	}
	return all[from:min(from+perPage, len(all))]
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func unnanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
