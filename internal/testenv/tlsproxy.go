package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

// TLSProxy terminates TLS, requiring a client certificate signed by the
// test CA, and forwards the plain stream to a local server. It lets tests
// check that a client's amqps:// or rediss:// set-up (CA file, client
// certificate) works, against the plain local servers.
type TLSProxy struct {
	ln      net.Listener
	target  string
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	clients int // connections that completed the handshake
}

// NewTLSProxy listens on a free loopback port; it closes at the end of
// the test.
func NewTLSProxy(t testing.TB, certs Certs, target string) *TLSProxy {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	caPEM, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatalf("CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatalf("tls listen: %v", err)
	}
	p := &TLSProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Port is the proxy's port on 127.0.0.1.
func (p *TLSProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Clients counts connections whose TLS handshake, client certificate
// included, succeeded.
func (p *TLSProxy) Clients() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.clients
}

func (p *TLSProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c.(*tls.Conn))
	}
}

func (p *TLSProxy) serve(c *tls.Conn) {
	defer p.wg.Done()
	if err := c.Handshake(); err != nil {
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.clients++
	p.conns = append(p.conns, c, up)
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(c, up)
	go pipe(up, c)
	<-done
	<-done
}

func (p *TLSProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
