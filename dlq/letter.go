package dlq

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/worker"
)

// Letter is a dead letter with its failure read from its headers.
type Letter struct {
	*broker.Delivery
	DLQ         string // the dead-letter queue it was read from
	Error       string // warren-error
	Kind        string // warren-error-kind; "unknown" when absent
	Reason      string // warren-dead-letter-reason
	Fingerprint string // Fingerprint(Error)
	First, Last time.Time
	ID          ID // identifies the message within its queue
}

// ID identifies a dead letter within its queue: a hash of its message id,
// body and failure. Two letters with the same ID are copies of one
// another.
type ID uint64

func (id ID) String() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return hex.EncodeToString(b[:])
}

// ParseID reads an ID written by ID.String.
func ParseID(s string) (ID, bool) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		return 0, false
	}
	return ID(binary.BigEndian.Uint64(b)), true
}

// UnknownKind is the kind of a dead letter without a warren-error-kind
// header (the broker's own dead letters: delivery limits, rejects).
const UnknownKind = "unknown"

// Read makes a Letter of a message read from dead-letter queue dlq.
func Read(d *broker.Delivery, dlq string) *Letter {
	return read(d, dlq, nil)
}

func read(d *broker.Delivery, dlq string, cache fingerprints) *Letter {
	l := &Letter{Delivery: d, DLQ: dlq}
	l.Error = headerString(d.Headers, worker.HeaderError)
	l.Kind = headerString(d.Headers, worker.HeaderErrorKind)
	if l.Kind == "" {
		l.Kind = UnknownKind
	}
	l.Reason = headerString(d.Headers, worker.HeaderDeadLetterReason)
	if cache != nil {
		l.Fingerprint = cache.of(l.Error)
	} else {
		l.Fingerprint = Fingerprint(l.Error)
	}
	l.First = headerTime(d.Headers, worker.HeaderFirstFailure)
	l.Last = headerTime(d.Headers, worker.HeaderLastFailure)
	h := fnv.New64a()
	for _, part := range [][]byte{[]byte(d.MessageID), d.Body, []byte(l.Error), []byte(headerString(d.Headers, worker.HeaderLastFailure))} {
		_, _ = h.Write(part)
		_, _ = h.Write([]byte{0})
	}
	l.ID = ID(h.Sum64())
	return l
}

func headerString(h map[string]any, k string) string {
	switch v := h[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func headerTime(h map[string]any, k string) time.Time {
	switch v := h[k].(type) {
	case time.Time:
		return v
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err == nil {
			return t
		}
	}
	return time.Time{}
}

// Name is the dead-letter queue of queue q, which may be named by its
// queue or by its dead-letter queue.
func Name(q string) string {
	if strings.HasSuffix(q, ".dlq") {
		return q
	}
	return retry.DLQ(q)
}

// QueueOf is the queue a dead-letter queue belongs to.
func QueueOf(dlq string) string { return strings.TrimSuffix(dlq, ".dlq") }

// FailureHeaders are the headers a replay removes, so that a replayed
// message starts over at attempt 1.
var FailureHeaders = []string{retry.AttemptHeader, worker.HeaderError, worker.HeaderErrorKind,
	worker.HeaderDeadLetterReason, worker.HeaderQueue, worker.HeaderHandler, worker.HeaderAttempts,
	worker.HeaderFirstFailure, worker.HeaderLastFailure, worker.HeaderHost,
	worker.HeaderOriginalExchange, worker.HeaderOriginalKey}

// IsFailureHeader reports whether k is one of FailureHeaders.
func IsFailureHeader(k string) bool {
	for _, f := range FailureHeaders {
		if f == k {
			return true
		}
	}
	return false
}
