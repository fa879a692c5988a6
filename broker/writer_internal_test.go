package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
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

// A write deadline applies to the writes after it: what was queued
// before still goes out (tls.Conn.Close queues its close_notify alert,
// then sets a deadline of now), later writes fail, and Close returns nil.
func TestCoalescingConnDeadlineSparesQueuedBytes(t *testing.T) {
	client, server := net.Pipe() // a write blocks until the peer reads
	defer server.Close()
	c := newCoalescingConn(client)
	if _, err := c.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write after the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len("queued"))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "queued" {
		t.Fatalf("the peer read %q, %v; want the bytes queued before the deadline", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, err := server.Read(got); err != io.EOF {
		t.Fatalf("after Close the peer read %d bytes, %v; want io.EOF", n, err)
	}
}

// Over TLS, Close sends the close_notify alert: the peer sees a clean
// end of stream, not a truncated one. A check of the whole path; the
// deterministic test of the deadline that could drop the alert is
// TestCoalescingConnDeadlineSparesQueuedBytes.
func TestCoalescingConnTLSCloseNotify(t *testing.T) {
	certs := testenv.NewCerts(t)
	cert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for round := 0; round < 20; round++ {
		rawClient, rawServer := loopback(t)
		server := tls.Server(rawServer, &tls.Config{Certificates: []tls.Certificate{cert}})
		read := make(chan error, 1)
		go func() {
			_ = server.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, err := io.Copy(io.Discard, server) // nil on close_notify
			read <- err
		}()
		client := tls.Client(newCoalescingConn(rawClient), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if _, err := client.Write([]byte("frame")); err != nil {
			t.Fatal(err)
		}
		if err := client.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		if err := <-read; err != nil {
			t.Fatalf("round %d: the peer's read ended with %v, want a clean close_notify", round, err)
		}
	}
}

// A deadline that passes fails a Write waiting for room in a full queue
// (the peer does not read), and Close reports that its own flush failed.
func TestCoalescingConnDeadlineFailsAWaitingWrite(t *testing.T) {
	client, server := net.Pipe() // nobody reads server
	defer server.Close()
	c := newCoalescingConn(client)
	big := make([]byte, maxQueuedWrite)
	// One on the wire (room is signalled only once a write is done), one
	// queued.
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the writer takes the first write", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.queued) == 0
	})
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() { _, err := c.Write(big); waiting <- err }()
	if err := c.SetWriteDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the waiting write returned %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write waiting for room outlived its deadline")
	}
	if err := c.Close(); err == nil {
		t.Fatal("Close returned nil although the queued bytes could not go out")
	}
}
