package broker

import (
	"net"
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
	for c.err == nil && !c.closing && len(c.queued) >= maxQueuedWrite {
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
	}
	c.queued = append(c.queued, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
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
				c.err = err
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
// the connection.
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
	_ = c.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
	return c.Conn.Close()
}
