package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// deadlines gives a route's handler runs their contexts. A handler's
// context must end at its timeout and when the handlers' context (base)
// is cancelled, and carries the message's logger. context.WithTimeout
// and WithValue do that with a runtime timer, a registration with base
// and three allocations per message, measured as a fifth of the pipeline's
// CPU with a handler that does nothing. Here a run costs one allocation:
// its context has a done channel only once someone asks for one (Done),
// and those that have one wait in a list in deadline order, behind one
// timer for the whole route. Runs share the route's timeout, so a new
// context almost always goes at the list's end.
type deadlines struct {
	base     context.Context
	baseDone <-chan struct{}
	stopBase func() bool // undoes the watch on base

	mu     sync.Mutex
	head   *handlerCtx // earliest deadline first; only contexts with a done channel
	tail   *handlerCtx
	timer  *time.Timer
	armed  time.Time // the deadline the timer is set for; zero: not set
	ended  error     // base's error once it ended
	closed bool      // the route's handlers are gone: stop re-arming
}

func newDeadlines(base context.Context) *deadlines {
	t := &deadlines{base: base, baseDone: base.Done()}
	t.timer = time.AfterFunc(time.Hour, t.fire)
	t.timer.Stop()
	t.stopBase = context.AfterFunc(base, t.cancelAll)
	return t
}

// handlerCtx is the context of one handler run.
type handlerCtx struct {
	parent   context.Context // values; its cancellation is the route's base
	t        *deadlines
	deadline time.Time
	ml       msgLogger

	// doneP points at done once it is set, for Done without the lock.
	doneP atomic.Pointer[chan struct{}]

	// Under t.mu.
	done       chan struct{}
	err        error
	prev, next *handlerCtx
	listed     bool
	funcs      []*afterFunc
}

type afterFunc struct{ f func() }

// closedChan is the done channel of a context that ended before anyone
// asked for its channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// start returns the context of a handler run under parent, which must be
// base or a context of values on top of it, and its finish; the context
// is c (it lives in the run's job) unless c was used already. Any other
// parent (another cancellation, or a deadline of its own) gets
// context.WithTimeout's context.
func (t *deadlines) start(parent context.Context, timeout time.Duration, log *zap.Logger, d *Delivery, c *handlerCtx) (context.Context, func()) {
	if _, hasDeadline := parent.Deadline(); t == nil || hasDeadline || parent.Done() != t.baseDone {
		ctx, cancel := context.WithTimeout(parent, timeout)
		return withLogger(ctx, log, d), cancel
	}
	if c == nil || c.t != nil {
		// A job that runs again (an ordered route's retry in place) gets
		// a context of its own: the last one may still be referred to.
		c = new(handlerCtx)
	}
	c.parent, c.t, c.deadline = parent, t, time.Now().Add(timeout)
	c.ml.base, c.ml.d = log, d
	return c, c.finish
}

func (c *handlerCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *handlerCtx) Value(key any) any {
	if key == (loggerKey{}) {
		return &c.ml
	}
	return c.parent.Value(key)
}

func (c *handlerCtx) String() string { return "worker.handlerContext" }

func (c *handlerCtx) Done() <-chan struct{} {
	if p := c.doneP.Load(); p != nil {
		return *p
	}
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	if c.errLocked() != nil {
		c.setDoneLocked(closedChan)
		return c.done
	}
	c.setDoneLocked(make(chan struct{}))
	t.insertLocked(c)
	return c.done
}

func (c *handlerCtx) Err() error {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.errLocked()
}

// errLocked is the context's error, found out now if its deadline passed
// or base ended without the timer or base's watch having told it yet.
func (c *handlerCtx) errLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.t.ended == nil {
		// base may have ended before its watch ran.
		c.t.ended = c.t.base.Err()
	}
	switch {
	case c.t.ended != nil:
		c.endLocked(c.t.ended)
	case !time.Now().Before(c.deadline):
		c.endLocked(context.DeadlineExceeded)
	}
	return c.err
}

// AfterFunc lets contexts made from this one (context.WithTimeout in a
// handler) follow its end without a goroutine each.
func (c *handlerCtx) AfterFunc(f func()) func() bool {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.errLocked() != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	c.funcs = append(c.funcs, a)
	if !c.listed && c.done == nil {
		// Its end must come on time: it waits in the list too.
		c.setDoneLocked(make(chan struct{}))
		t.insertLocked(c)
	}
	return func() bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		for i, b := range c.funcs {
			if b == a {
				c.funcs = append(c.funcs[:i], c.funcs[i+1:]...)
				return true
			}
		}
		return false
	}
}

// setDoneLocked sets the done channel, which never changes afterwards.
func (c *handlerCtx) setDoneLocked(ch chan struct{}) {
	c.done = ch
	c.doneP.Store(&c.done)
}

// finish ends the context once its handler returned, as a timeout
// context's cancel does.
func (c *handlerCtx) finish() {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.err == nil {
		c.endLocked(context.Canceled)
	}
}

// endLocked ends the context with err: it leaves the list, its channel
// closes and its after-funcs start.
func (c *handlerCtx) endLocked(err error) {
	c.err = err
	if c.listed {
		c.t.removeLocked(c)
	}
	if c.done != nil && c.done != closedChan {
		close(c.done)
	}
	for _, a := range c.funcs {
		go a.f()
	}
	c.funcs = nil
}

// insertLocked puts c in the list by its deadline and sets the timer if
// c is now the earliest.
func (t *deadlines) insertLocked(c *handlerCtx) {
	at := t.tail
	for at != nil && at.deadline.After(c.deadline) {
		at = at.prev
	}
	c.prev = at
	if at == nil {
		c.next = t.head
		t.head = c
	} else {
		c.next = at.next
		at.next = c
	}
	if c.next == nil {
		t.tail = c
	} else {
		c.next.prev = c
	}
	c.listed = true
	if t.head == c && !t.closed && (t.armed.IsZero() || c.deadline.Before(t.armed)) {
		t.armed = c.deadline
		t.timer.Reset(time.Until(c.deadline))
	}
}

func (t *deadlines) removeLocked(c *handlerCtx) {
	if c.prev == nil {
		t.head = c.next
	} else {
		c.prev.next = c.next
	}
	if c.next == nil {
		t.tail = c.prev
	} else {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// fire ends the contexts whose deadline passed and sets the timer for the
// next one.
func (t *deadlines) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = time.Time{}
	now := time.Now()
	for t.head != nil && !now.Before(t.head.deadline) {
		t.head.endLocked(context.DeadlineExceeded)
	}
	if t.head != nil && !t.closed {
		t.armed = t.head.deadline
		t.timer.Reset(t.head.deadline.Sub(now))
	}
}

// cancelAll ends every context once base has ended.
func (t *deadlines) cancelAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = t.base.Err()
	for t.head != nil {
		t.head.endLocked(t.ended)
	}
}

// close stops the timer and the watch on base once the route's handlers
// have returned.
func (t *deadlines) close() {
	t.stopBase()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.timer.Stop()
}
