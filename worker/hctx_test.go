package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

type ctxKey string

// waitDone fails unless ctx is done within a generous deadline.
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done after 10s", what)
	}
}

func notDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatalf("%s: done already (%v)", what, ctx.Err())
	default:
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("%s: Err = %v, want nil", what, err)
	}
}

func newTestDeadlines(t *testing.T) (*deadlines, context.Context, context.CancelFunc) {
	t.Helper()
	base, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey("k"), "v"))
	dl := newDeadlines(base)
	t.Cleanup(func() { cancel(); dl.close() })
	return dl, base, cancel
}

func TestHandlerContextDeadline(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	d := &Delivery{Queue: "q1"}
	start := time.Now()
	var in handlerCtx
	ctx, finish := dl.start(base, 50*time.Millisecond, zap.NewNop(), d, &in)
	defer finish()
	if ctx != &in {
		t.Fatalf("start on base gave %T, want the handler context it was given", ctx)
	}
	dd, ok := ctx.Deadline()
	if !ok || dd.Before(start.Add(50*time.Millisecond)) || dd.After(time.Now().Add(50*time.Millisecond)) {
		t.Fatalf("Deadline = %v, %v; want about 50ms from the start", dd, ok)
	}
	if got := ctx.Value(ctxKey("k")); got != "v" {
		t.Fatalf("a value of the parent: got %v, want v", got)
	}
	if m, ok := ctx.Value(loggerKey{}).(*msgLogger); !ok || m.d != d {
		t.Fatalf("the message's logger: got %#v", ctx.Value(loggerKey{}))
	}
	notDone(t, ctx, "before the deadline")
	waitDone(t, ctx, "after the deadline")
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Fatalf("done after %s, before its 50ms deadline", took)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, Cause = %v; want DeadlineExceeded", ctx.Err(), context.Cause(ctx))
	}
	if base.Err() != nil {
		t.Fatal("a handler's deadline ended base")
	}
	// A second run with the same (used) context gets a fresh one.
	again, finishAgain := dl.start(base, time.Hour, zap.NewNop(), d, &in)
	defer finishAgain()
	if again == &in {
		t.Fatal("a used handler context was handed out again")
	}
	notDone(t, again, "a second run's context")
}

// A context whose channel nobody asked for still reports its deadline
// through Err, and its channel is closed when asked for afterwards.
func TestHandlerContextErrWithoutDone(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	ctx, finish := dl.start(base, 20*time.Millisecond, zap.NewNop(), &Delivery{}, nil)
	defer finish()
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err still nil 10s after a 20ms deadline")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", ctx.Err())
	}
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Done is open after Err reported the deadline")
	}
}

// Contexts end in deadline order, also when one is listed behind a later
// one, and a finished one leaves the list.
func TestHandlerContextsEndInOrder(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	long, finishLong := dl.start(base, time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finishLong()
	_ = long.Done()
	gone, finishGone := dl.start(base, 30*time.Millisecond, zap.NewNop(), &Delivery{}, nil)
	_ = gone.Done()
	short, finishShort := dl.start(base, 60*time.Millisecond, zap.NewNop(), &Delivery{}, nil)
	defer finishShort()
	_ = short.Done()
	finishGone()
	if !errors.Is(gone.Err(), context.Canceled) {
		t.Fatalf("a finished context: Err = %v, want Canceled", gone.Err())
	}
	waitDone(t, short, "the short context")
	notDone(t, long, "the hour-long context")
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.head != long || dl.tail != long || long.(*handlerCtx).prev != nil || long.(*handlerCtx).next != nil {
		t.Fatal("the list should hold only the hour-long context")
	}
}

func TestHandlerContextListOrder(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	var all []*handlerCtx
	for _, d := range []time.Duration{5, 3, 4, 1, 2, 6} {
		ctx, finish := dl.start(base, d*time.Hour, zap.NewNop(), &Delivery{}, nil)
		defer finish()
		_ = ctx.Done()
		all = append(all, ctx.(*handlerCtx))
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	var got []time.Time
	for c := dl.head; c != nil; c = c.next {
		got = append(got, c.deadline)
		if c.next != nil && c.next.prev != c {
			t.Fatal("a broken back link")
		}
	}
	if len(got) != len(all) {
		t.Fatalf("%d listed, want %d", len(got), len(all))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Before(got[i-1]) {
			t.Fatalf("listed out of deadline order at %d", i)
		}
	}
	if !dl.armed.Equal(dl.head.deadline) {
		t.Fatalf("the timer is set for %v, want the head's %v", dl.armed, dl.head.deadline)
	}
}

func TestHandlerContextBaseCancel(t *testing.T) {
	dl, base, cancel := newTestDeadlines(t)
	listed, finish1 := dl.start(base, time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finish1()
	_ = listed.Done()
	quiet, finish2 := dl.start(base, time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finish2()
	cancel()
	waitDone(t, listed, "a listed context after base's cancel")
	if !errors.Is(listed.Err(), context.Canceled) || !errors.Is(quiet.Err(), context.Canceled) {
		t.Fatalf("Err = %v and %v, want Canceled", listed.Err(), quiet.Err())
	}
	late, finish3 := dl.start(base, time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finish3()
	waitDone(t, late, "a context started after base's cancel")
}

// Contexts made from a handler's context end with it, through its
// AfterFunc rather than a goroutine each, and leave nothing behind.
func TestHandlerContextChildren(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	ctx, finish := dl.start(base, 40*time.Millisecond, zap.NewNop(), &Delivery{}, nil)
	defer finish()
	child, cancelChild := context.WithCancel(ctx)
	other, cancelOther := context.WithTimeout(ctx, time.Hour)
	cancelOther()
	hc := ctx.(*handlerCtx)
	dl.mu.Lock()
	n := len(hc.funcs)
	dl.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d after-funcs registered, want 1 (the cancelled child's is gone)", n)
	}
	waitDone(t, child, "a child after its parent's deadline")
	if !errors.Is(child.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Fatalf("child: Err = %v, Cause = %v; want the parent's DeadlineExceeded", child.Err(), context.Cause(child))
	}
	cancelChild()
	if other.Err() == nil {
		t.Fatal("the cancelled child is not done")
	}
	// A child made from an ended context ends at once.
	after, cancelAfter := context.WithCancel(ctx)
	defer cancelAfter()
	waitDone(t, after, "a child of an ended context")
}

// The handler's return ends its context, as a timeout context's cancel
// does, with its children.
func TestHandlerContextFinish(t *testing.T) {
	dl, base, _ := newTestDeadlines(t)
	ctx, finish := dl.start(base, time.Hour, zap.NewNop(), &Delivery{}, nil)
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	finish()
	waitDone(t, ctx, "a finished context")
	waitDone(t, child, "the child of a finished context")
	finish() // a second call does nothing
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.head != nil {
		t.Fatal("a finished context stayed in the list")
	}
}

// Any parent but base or values on top of it gets a standard context.
func TestHandlerContextOtherParent(t *testing.T) {
	dl, _, _ := newTestDeadlines(t)
	other, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx, finish := dl.start(other, time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finish()
	if _, ok := ctx.(*handlerCtx); ok {
		t.Fatal("a parent with another cancellation got the route's handler context")
	}
	if _, ok := ctx.Value(loggerKey{}).(*msgLogger); !ok {
		t.Fatal("the standard context has no message logger")
	}
	cancel()
	waitDone(t, ctx, "a standard context after its parent's cancel")
	var none *deadlines
	ctx2, finish2 := none.start(context.Background(), time.Hour, zap.NewNop(), &Delivery{}, nil)
	defer finish2()
	if _, ok := ctx2.Deadline(); !ok {
		t.Fatal("without deadlines: no deadline")
	}
}

// Many handlers at once, under the race detector.
func TestHandlerContextConcurrent(t *testing.T) {
	dl, base, cancel := newTestDeadlines(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				ctx, finish := dl.start(base, time.Duration(1+(g+i)%3)*time.Millisecond, zap.NewNop(), &Delivery{}, nil)
				if i%2 == 0 {
					select {
					case <-ctx.Done():
					case <-time.After(time.Millisecond):
					}
				}
				if i%5 == 0 {
					c, cc := context.WithTimeout(ctx, time.Millisecond)
					<-c.Done()
					cc()
				}
				_ = ctx.Err()
				finish()
			}
		}()
	}
	wg.Wait()
	cancel()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.head != nil || dl.tail != nil {
		t.Fatal("contexts left in the list after every handler finished")
	}
}
