package dlq

import (
	"strings"
	"time"
)

// Filter selects dead letters. Zero fields select everything. The index
// and a replay apply the same Filter, so a replay by filter moves exactly
// the letters the group view counted (as the queue holds them then).
type Filter struct {
	// Text must occur, ignoring case, in the error kind or the
	// fingerprint.
	Text string
	// Queue is a dead-letter queue, or the queue it belongs to.
	Queue string
	// Since and Until bound the last failure time; letters without one
	// pass only when neither is set.
	Since, Until time.Time
	// Group is a group's Key.
	Group string
	// ID is one letter's ID; 0 means any.
	ID ID
}

// Match reports whether l passes the filter.
func (f Filter) Match(l *Letter) bool {
	if f.ID != 0 && l.ID != f.ID {
		return false
	}
	return f.matchGroup(l.DLQ, l.Kind, l.Fingerprint) && f.matchTime(l.Last)
}

func (f Filter) matchGroup(dlq, kind, fp string) bool {
	if f.Queue != "" && Name(f.Queue) != dlq {
		return false
	}
	if f.Group != "" && GroupKey(dlq, kind, fp) != f.Group {
		return false
	}
	if f.Text == "" {
		return true
	}
	t := strings.ToLower(f.Text)
	return strings.Contains(strings.ToLower(kind), t) || strings.Contains(strings.ToLower(fp), t)
}

func (f Filter) matchTime(last time.Time) bool {
	if f.Since.IsZero() && f.Until.IsZero() {
		return true
	}
	if last.IsZero() {
		return false
	}
	return (f.Since.IsZero() || !last.Before(f.Since)) && (f.Until.IsZero() || !last.After(f.Until))
}

// Empty reports whether the filter selects everything.
func (f Filter) Empty() bool { return f == Filter{} }
