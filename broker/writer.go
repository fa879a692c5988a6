package broker

import (
	"net"
	"os"
	"sync"
	"time"
)

// maxQueuedWrite bounds the bytes a coalescingConn queues; a writer
// beyond it waits for the wire.
const maxQueuedWrite = 1 << 20

// closeFlushTimeout bounds how long Close waits for queued bytes to go
// out to a peer that does not read.
const closeFlushTimeout = time.Second

// coalescingConn is a connection whose writes go out from a goroutine of
// its own: Write queues the bytes and returns, and what is queued while a
// write is on the wire goes out together in the next one. The client
// library writes to the socket once per published message (and per ack,
// per heartbeat); under load this turns many small writes into a few
// large ones, which saves the system calls that were about half of a
// publisher's CPU. Alone, a write costs a hand-over to the goroutine
// instead. Order is kept; a failed write fails every later Write and
// closes the connection, so that the reader sees it too, as it would
// have seen the failed write.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	room    *sync.Cond // signalled when the queue shrinks or fails
	queued  []byte
	spare   []byte
	err     error
	closing bool
	// lateErr: err came from Close's own flush, which no Write reports.
	lateErr bool
	wdl     time.Time // the callers' write deadline (SetWriteDeadline)

	wake chan struct{} // cap 1: something is queued, or Close
	done chan struct{} // the writer goroutine has returned
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	cc.room = sync.NewCond(&cc.mu)
	go cc.run()
	return cc
}

// Write queues p.
func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.queued) >= maxQueuedWrite && !c.pastDeadlineLocked() {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closing:
		c.mu.Unlock()
		return 0, net.ErrClosed
	case c.pastDeadlineLocked():
		c.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	c.queued = append(c.queued, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// SetWriteDeadline bounds the callers' writes: from t on, Write fails
// with os.ErrDeadlineExceeded, as on a plain connection. What was queued
// before still goes out, since on a plain connection it would have been
// written already: tls.Conn.Close queues its close_notify alert, then sets
// a deadline of now so that later writes fail, and applied to the socket
// that deadline would fail the alert's write. A deadline still ahead (or
// none) also applies to the socket, so that a peer that stops reading
// cannot block the writer goroutine for ever; one that has passed fails
// the writes waiting for room at once. Once Close has begun, its own
// bound on the socket stays.
func (c *coalescingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	switch {
	case c.closing:
		return nil
	case t.IsZero() || time.Now().Before(t):
		return c.Conn.SetWriteDeadline(t)
	}
	c.room.Broadcast()
	return nil
}

// pastDeadlineLocked reports whether the callers' write deadline has
// passed.
func (c *coalescingConn) pastDeadlineLocked() bool {
	return !c.wdl.IsZero() && !time.Now().Before(c.wdl)
}

// SetDeadline sets the read deadline of the socket and the write deadline
// as SetWriteDeadline does.
func (c *coalescingConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// run writes what is queued until Close, then what is left.
func (c *coalescingConn) run() {
	defer close(c.done)
	for range c.wake {
		c.mu.Lock()
		for len(c.queued) > 0 && c.err == nil {
			buf := c.queued
			c.queued, c.spare = c.spare[:0], nil // never two names for one array
			c.mu.Unlock()
			_, err := c.Conn.Write(buf)
			c.mu.Lock()
			if cap(buf) <= maxQueuedWrite {
				c.spare = buf[:0]
			}
			if err != nil {
				c.err, c.lateErr = err, c.closing
				_ = c.Conn.Close() // the reader sees the loss too
			}
			c.room.Broadcast()
		}
		end := c.closing || c.err != nil
		c.mu.Unlock()
		if end {
			return
		}
	}
}

// Close sends what is queued (for at most closeFlushTimeout) and closes
// the connection. After a failed write the connection is closed already:
// Close returns the failure if it came in its own flush, and nil if it
// came before (the connection was lost then, and its reader saw it).
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closing = true
	c.room.Broadcast()
	c.mu.Unlock()
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
	c.mu.Lock()
	err, late := c.err, c.lateErr
	c.mu.Unlock()
	switch {
	case err == nil:
		return c.Conn.Close()
	case late:
		return err
	}
	return nil
}
