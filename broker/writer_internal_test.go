package broker

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// loopback returns both ends of a TCP connection on localhost.
func loopback(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// Writes from many goroutines arrive whole and unchanged, each
// goroutine's in its order, and Close sends what is still queued; also
// with writes larger than the queue's bound.
func TestCoalescingConnKeepsEveryWrite(t *testing.T) {
	for _, tc := range []struct {
		name          string
		size, writers int
		each          int
	}{
		{"small", 16, 8, 2000},
		{"large", 700 << 10, 4, 12},
	} {
		t.Run(tc.name, func(t *testing.T) { keepsEveryWrite(t, tc.size, tc.writers, tc.each) })
	}
}

// record is writer w's i-th record of size bytes: w and i, then a
// pattern of both.
func record(w, i, size int) []byte {
	rec := make([]byte, size)
	binary.BigEndian.PutUint64(rec[:8], uint64(w))
	binary.BigEndian.PutUint64(rec[8:], uint64(i))
	for k := 16; k < size; k++ {
		rec[k] = byte(w*31 + i*7 + k)
	}
	return rec
}

func keepsEveryWrite(t *testing.T, size, writers, each int) {
	client, server := loopback(t)
	c := newCoalescingConn(client)
	received := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		received <- b
	}()
	var mu sync.Mutex // one write at a time, as the client library writes
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				rec := record(w, i, size)
				mu.Lock()
				n, err := c.Write(rec)
				mu.Unlock()
				if err != nil || n != len(rec) {
					t.Errorf("write: %d, %v", n, err)
					return
				}
				clear(rec) // the caller may reuse its buffer at once
			}
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	var b []byte
	select {
	case b = <-received:
	case <-time.After(20 * time.Second):
		t.Fatal("the peer never saw the end of the stream")
	}
	if len(b) != writers*each*size {
		t.Fatalf("the peer got %d bytes, want %d", len(b), writers*each*size)
	}
	next := make([]int, writers)
	for off := 0; off < len(b); off += size {
		w := int(binary.BigEndian.Uint64(b[off:]))
		if w >= writers {
			t.Fatalf("record at %d names writer %d", off, w)
		}
		if !bytes.Equal(b[off:off+size], record(w, next[w], size)) {
			t.Fatalf("record at %d is not writer %d's record %d, whole and in order", off, w, next[w])
		}
		next[w]++
	}
}

// A write that fails fails every later Write and closes the socket, and
// Close still returns.
func TestCoalescingConnFailsAfterAFailedWrite(t *testing.T) {
	client, server := loopback(t)
	c := newCoalescingConn(client)
	_ = server.Close()
	_ = client.(*net.TCPConn).CloseWrite() // the next write on the wire fails
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write([]byte("frame"))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes kept succeeding on a connection that cannot write")
	}
	if _, err2 := c.Write([]byte("more")); err2 == nil {
		t.Fatal("a write after the failure succeeded")
	}
	_ = c.Close()
	select {
	case <-c.done:
	default:
		t.Fatal("the writer goroutine outlived Close")
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}
