package worker

import (
	"fmt"
	"math"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/dedupe"
	"github.com/warrenmq/warren/retry"
)

// Headers warren writes on retry copies and dead letters.
const (
	HeaderError            = "warren-error"
	HeaderErrorKind        = "warren-error-kind"
	HeaderDeadLetterReason = "warren-dead-letter-reason"
	HeaderQueue            = "warren-queue"
	HeaderHandler          = "warren-handler"
	HeaderOriginalExchange = "warren-original-exchange"
	HeaderOriginalKey      = "warren-original-routing-key"
	HeaderAttempts         = "warren-attempts"
	HeaderFirstFailure     = "warren-first-failure"
	HeaderLastFailure      = "warren-last-failure"
	HeaderHost             = "warren-host"
	// HeaderOriginalUserID keeps the original's user_id property when the
	// copy cannot carry it: RabbitMQ refuses a message whose user_id is
	// not the publishing connection's user, and the worker's user may
	// differ from the producer's. Unlike the property, the broker does not
	// check this header: do not trust it as an identity.
	HeaderOriginalUserID = "warren-original-user-id"
	// HeaderInProgress counts the rounds a message went through the
	// delay tiers because it was in progress elsewhere (no attempt spent).
	HeaderInProgress = "warren-in-progress"
)

// MaxErrorHeader bounds the error text written into a header, in bytes.
const MaxErrorHeader = 1024

// brokerHeaders are set by the broker on dead-lettering; copies drop them
// so they do not pile up, and nothing here ever counts attempts with them.
var brokerHeaders = []string{"x-death", "x-first-death-exchange", "x-first-death-queue",
	"x-first-death-reason", "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count"}

// IsBrokerHeader reports whether k is a header the broker sets on
// dead-lettering or redelivery (x-death and the like). Copies of a
// message, and replays of dead letters, leave them out.
func IsBrokerHeader(k string) bool { return slices.Contains(brokerHeaders, k) }

// viewer builds the handler's view of a route's deliveries.
type viewer struct {
	queue       string
	maxAttempts int
	dedupeKey   func(*Delivery) string // nil means the message id
	keys        dedupe.QueueKeys
}

// newViewer returns the viewer of queue's deliveries; prefix is that of
// its dedupe keys.
func newViewer(queue string, maxAttempts int, prefix string, dedupeKey func(*Delivery) string) viewer {
	return viewer{queue: queue, maxAttempts: maxAttempts, dedupeKey: dedupeKey, keys: dedupe.KeysOf(prefix, queue)}
}

// into builds the handler's view of bd in d. A panic of the route's
// DedupeKey is returned as a *CallbackPanicError: d then has the key of
// the message id (or body), and the message is dead-lettered.
func (v viewer) into(d *Delivery, bd *broker.Delivery) (err error) {
	*d = Delivery{
		Message:     bd.Message,
		Queue:       bd.Queue,
		Exchange:    bd.Exchange,
		RoutingKey:  bd.RoutingKey,
		Redelivered: bd.Redelivered,
		MaxAttempts: v.maxAttempts,
	}
	if ex, ok := bd.Headers[HeaderOriginalExchange].(string); ok {
		d.Exchange = ex
	}
	if key, ok := bd.Headers[HeaderOriginalKey].(string); ok {
		d.RoutingKey = key
	}
	id := ""
	if v.dedupeKey != nil {
		id, err = callback("Route.DedupeKey", func() string { return v.dedupeKey(d) })
	}
	if id == "" {
		id = bd.MessageID
	}
	if id == "" {
		id = dedupe.BodyKeyID(bd.Body)
	}
	d.IdempotencyKey = v.keys.Key(id)
	return err
}

// CallbackPanicError is a panic of a route's callback (Route.DedupeKey,
// Limits.Key) on a message. The message is dead-lettered, kind panic: run
// again, it would only panic again.
type CallbackPanicError struct {
	Callback string
	Value    any
	Stack    []byte
}

func (e *CallbackPanicError) Error() string {
	return fmt.Sprintf("%s panicked: %v", e.Callback, e.Value)
}

// callback runs a route's callback fn, turning a panic into a
// *CallbackPanicError.
func callback(name string, fn func() string) (s string, err error) {
	defer func() {
		if v := recover(); v != nil {
			s, err = "", &CallbackPanicError{Callback: name, Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(), nil
}

// copyHeaders returns the headers of bd without the broker's
// dead-lettering headers, with the original exchange and routing key kept.
func copyHeaders(bd *broker.Delivery, d *Delivery) map[string]any {
	h := make(map[string]any, len(bd.Headers)+10)
	for k, v := range bd.Headers {
		h[k] = v
	}
	for _, k := range brokerHeaders {
		delete(h, k)
	}
	h[HeaderOriginalExchange] = d.Exchange
	h[HeaderOriginalKey] = d.RoutingKey
	return h
}

// copier builds the copies of a route's messages: retry copies and dead
// letters, with the failure written on them.
type copier struct {
	queue   string // the route's queue
	handler string // the route's name
	host    string
	user    string // the broker user the copies are published as
}

// MoveUserID prepares m, a copy with the headers h, to be published as
// user: a user_id property naming another user moves to
// HeaderOriginalUserID in h, since the broker would refuse the copy (and
// a retry or dead letter could not be stored).
func MoveUserID(m *broker.Message, h map[string]any, user string) {
	if m.UserID != "" && m.UserID != user {
		h[HeaderOriginalUserID] = m.UserID
		m.UserID = ""
	}
}

// failureHeaders records a failure on h.
func (c copier) failureHeaders(h map[string]any, res result, attempt int) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, ok := h[HeaderFirstFailure].(string); !ok {
		h[HeaderFirstFailure] = now
	}
	h[HeaderLastFailure] = now
	h[HeaderError] = cut(errText(res.err), MaxErrorHeader)
	h[HeaderErrorKind] = res.Kind
	h[HeaderQueue] = c.queue
	h[HeaderHandler] = c.handler
	h[HeaderAttempts] = int32(attempt)
	h[HeaderHost] = c.host
}

// retryMessage is the copy published to a delay tier.
func (c copier) retryMessage(bd *broker.Delivery, d *Delivery, res result) broker.Message {
	m := bd.Message
	m.Expiration = "" // the tier's TTL decides when it comes back
	h := copyHeaders(bd, d)
	MoveUserID(&m, h, c.user)
	next := d.Attempt
	switch {
	case res.spend:
		next++
		c.failureHeaders(h, res, d.Attempt)
		delete(h, HeaderInProgress)
	case res.Kind == KindInProgress:
		h[HeaderInProgress] = inProgressRounds(h) + 1
	}
	m.Headers = retry.SetAttempt(h, next)
	return m
}

// deadLetter is the message published to the dead-letter queue: the body
// and properties unchanged, with the failure written in headers.
func (c copier) deadLetter(bd *broker.Delivery, d *Delivery, res result) broker.Message {
	m := bd.Message
	m.Expiration = "" // as the broker does when it dead-letters: a dead letter never expires
	h := copyHeaders(bd, d)
	MoveUserID(&m, h, c.user)
	c.failureHeaders(h, res, d.Attempt)
	delete(h, HeaderInProgress) // a replay starts its waits afresh
	h[HeaderDeadLetterReason] = res.Reason
	m.Headers = h
	return m
}

// cut makes s valid UTF-8 and shortens it to at most n bytes on a rune
// boundary.
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	end := n - len("…")
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return strings.TrimRight(s[:end], " ") + "…"
}

// inProgressRounds reads HeaderInProgress of h. Warren writes an int32;
// an integer of any other type (another client or a tool may encode the
// header anew) is read too, so that the waits keep growing; anything else
// counts as no round.
func inProgressRounds(h map[string]any) int32 {
	v := reflect.ValueOf(h[HeaderInProgress])
	var n int64
	switch {
	case v.CanInt():
		n = v.Int()
	case v.CanUint():
		n = int64(min(v.Uint(), math.MaxInt32))
	}
	return int32(min(max(n, 0), math.MaxInt32-1))
}
