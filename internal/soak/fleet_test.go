package soak

import (
	"bytes"
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenmq/warren/internal/testenv"
)

// proc is one worker process.
type proc struct {
	name    string
	slot    int
	logPath string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when the process has exited
	err     error         // the exit status, once done is closed

	mu       sync.Mutex
	how      string    // how the test ended it: "", "sigkill", "sigterm"
	killedAt time.Time // when it was sent SIGKILL, if it was

	backlogAtKill int  // ready messages (last reading) when the fault SIGKILLed it
	escalated     bool // a SIGTERM that did not end it in time, followed by SIGKILL
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) setHow(how string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.how == "" {
		p.how = how
	}
}

func (p *proc) stopInfo() (how string, escalated bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.how, p.escalated
}

// killTime returns when p was sent SIGKILL (zero if never).
func (p *proc) killTime() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.killedAt
}

// crashed reports whether the process died by SIGKILL (ours), which may
// leave an effect without its done mark.
func (p *proc) crashed() bool {
	how, esc := p.stopInfo()
	return how == "sigkill" || esc
}

// slot is a place for one worker process with its own proxies, so that
// the test can cut this worker's links alone. mu is held while the
// process in the slot is being replaced.
type slot struct {
	idx     int
	amqp    *brokerLink
	amqpURL string // the broker through amqp
	redis   *testenv.Proxy
	mu      sync.Mutex
	cur     *proc
}

// fleet runs the worker processes.
type fleet struct {
	t      *testing.T
	bin    string
	env    []string
	logDir string
	slots  []*slot

	mu         sync.Mutex
	procs      []*proc
	gens       map[int]int
	unexpected []string // processes that exited without being asked to
	lastCrash  string   // the log of the last of them
}

// brokerLink is one client's way to the broker: a proxy per broker
// address (one per node of a cluster), so that the test can cut the
// client off every node at once.
type brokerLink struct {
	proxies []*testenv.Proxy
	url     string // the addresses through the proxies, in WARREN_AMQP_URL form
}

// newBrokerLink proxies every address of nodes.
func newBrokerLink(t *testing.T, nodes []string) *brokerLink {
	l := &brokerLink{}
	var urls []string
	for _, n := range nodes {
		u, err := url.Parse(n)
		if err != nil {
			t.Fatalf("broker address: %v", err)
		}
		p := testenv.NewProxy(t, u.Host)
		u.Host = p.Addr()
		l.proxies = append(l.proxies, p)
		urls = append(urls, u.String())
	}
	l.url = strings.Join(urls, ",")
	return l
}

// Cut closes every open connection through the link.
func (l *brokerLink) Cut() {
	for _, p := range l.proxies {
		p.Cut()
	}
}

// Refuse makes every proxy of the link refuse connections (on=true), or
// forward them again.
func (l *brokerLink) Refuse(on bool) {
	for _, p := range l.proxies {
		p.Refuse(on)
	}
}

func newFleet(t *testing.T, bin, logDir string, env []string, n int, redisAddr string, nodes []string) *fleet {
	f := &fleet{t: t, bin: bin, env: env, logDir: logDir, gens: map[int]int{}}
	for i := 0; i < n; i++ {
		l := newBrokerLink(t, nodes)
		f.slots = append(f.slots, &slot{idx: i, amqp: l, amqpURL: l.url, redis: testenv.NewProxy(t, redisAddr)})
	}
	t.Cleanup(f.killAll)
	return f
}

// start starts a new process in s; s.mu must be held.
func (f *fleet) start(s *slot) (*proc, error) {
	f.mu.Lock()
	f.gens[s.idx]++
	name := fmt.Sprintf("w%d.%d", s.idx, f.gens[s.idx])
	f.mu.Unlock()
	logPath := filepath.Join(f.logDir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(f.bin)
	cmd.Env = append(append([]string(nil), f.env...),
		"WARREN_AMQP_URL="+s.amqpURL,
		"WARREN_REDIS_URL=redis://"+s.redis.Addr()+"/0",
		"SOAK_INSTANCE="+name,
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, slot: s.idx, logPath: logPath, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	s.cur = p
	return p, nil
}

// startAll starts a process in every empty or exited slot.
func (f *fleet) startAll() error {
	for _, s := range f.slots {
		s.mu.Lock()
		var err error
		if s.cur == nil || s.cur.exited() {
			_, err = f.start(s)
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// ensure restarts processes that exited without being asked to, and
// records them. It skips a slot that is being replaced right now.
func (f *fleet) ensure() {
	for _, s := range f.slots {
		if !s.mu.TryLock() {
			continue
		}
		if p := s.cur; p != nil && p.exited() {
			if how, _ := p.stopInfo(); how == "" {
				f.mu.Lock()
				f.unexpected = append(f.unexpected, fmt.Sprintf("%s exited by itself: %v (log %s)", p.name, p.err, p.logPath))
				f.lastCrash = p.logPath
				f.mu.Unlock()
				f.t.Logf("soak: %s exited by itself: %v; restarting", p.name, p.err)
				if _, err := f.start(s); err != nil {
					f.t.Logf("soak: restarting slot %d: %v", s.idx, err)
				}
			}
		}
		s.mu.Unlock()
	}
}

// waitRunning waits until p has logged that it runs (or exited, or the
// timeout passed).
func waitRunning(p *proc, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && !p.exited() {
		if head(p.logPath, 1<<20, []byte(`"msg":"running"`)) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// head reports whether the first n bytes of the file at path contain sub.
func head(path string, n int, sub []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, n)
	m, _ := io.ReadFull(f, b)
	return bytes.Contains(b[:m], sub)
}

// kill ends p as a crash would.
func kill(p *proc) {
	p.setHow("sigkill")
	p.mu.Lock()
	p.killedAt = time.Now()
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term asks p to drain and waits up to timeout; then it kills p. It
// reports whether p ended by itself in time.
func term(p *proc, timeout time.Duration) bool {
	p.setHow("sigterm")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
	}
	p.mu.Lock()
	p.escalated = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.done
	return false
}

// stopAll drains every running process (SIGTERM, in parallel) and returns
// the problems seen: a drain that timed out or a non-zero exit.
func (f *fleet) stopAll(timeout time.Duration) []string {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	for _, s := range f.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.mu.Lock()
			defer s.mu.Unlock()
			p := s.cur
			if p == nil || p.exited() {
				return
			}
			if msg := termChecked(p, timeout); msg != "" {
				mu.Lock()
				errs = append(errs, msg)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// termChecked drains p and describes what went wrong, or returns "".
func termChecked(p *proc, timeout time.Duration) string {
	start := time.Now()
	if !term(p, timeout) {
		return fmt.Sprintf("%s did not finish its drain within %s after SIGTERM; killed (log %s)", p.name, timeout, p.logPath)
	}
	if p.err != nil {
		return fmt.Sprintf("%s exited with %v after SIGTERM (took %s, log %s)", p.name, p.err, time.Since(start).Round(time.Millisecond), p.logPath)
	}
	return ""
}

func (f *fleet) killAll() {
	f.mu.Lock()
	procs := append([]*proc(nil), f.procs...)
	f.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			kill(p)
		}
	}
}

func (f *fleet) all() []*proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*proc(nil), f.procs...)
}

func (f *fleet) lastCrashLog() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastCrash
}

func (f *fleet) unexpectedExits() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.unexpected...)
}

// redisServer is a private redis-server for the soak, with an append-only
// file fsynced on every write: a kill -9 loses no acknowledged write, as
// with a production Redis configured for durability. It keeps its port
// across restarts. The shared test Redis is never touched.
type redisServer struct {
	port int
	dir  string

	mu        sync.Mutex
	cmd       *exec.Cmd
	out       *bytes.Buffer
	downSince time.Time
	downs     [][2]time.Time // when the server was down: killed, answering again
}

// downNear reports whether the server was down at some time within d
// before t.
func (s *redisServer) downNear(t time.Time, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.downs {
		if !w[0].After(t) && !w[1].Before(t.Add(-d)) {
			return true
		}
	}
	return !s.downSince.IsZero() && !s.downSince.After(t)
}

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed for the soak: %v", err)
	}
	s := &redisServer{port: stablePort(t), dir: t.TempDir()}
	t.Cleanup(s.kill)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// stablePort returns a free loopback port below the kernel's ephemeral
// range, so that while the server is down no outgoing connection can be
// given its port and keep it from starting again.
func stablePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	if low > 11000 {
		for try := 0; try < 50; try++ {
			port := 10000 + mrand.IntN(low-10000)
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				_ = ln.Close()
				return port
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// start starts the server (again) and waits until it answers.
func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	out := &bytes.Buffer{}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--dir", s.dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.cmd, s.out = cmd, out
	c := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			if !s.downSince.IsZero() {
				s.downs = append(s.downs, [2]time.Time{s.downSince, time.Now()})
				s.downSince = time.Time{}
			}
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			s.cmd = nil
			return fmt.Errorf("private redis-server on %s does not answer: %v\n%s", s.addr(), err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the server as a crash would (SIGKILL) and waits for it.
func (s *redisServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.downSince = time.Now()
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
