package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/warrenmq/warren/internal/redact"
)

// ErrClosed is returned by operations on a closed Conn, Publisher or Consumer.
var ErrClosed = errors.New("broker: closed")

// Conn is a supervised AMQP connection to one of the addresses of
// Config.URL. When the connection drops it reconnects, trying the next
// address first and the others in turn, with jittered exponential backoff
// between rounds, declares every topology
// given to Declare again, and lets publishers and consumers open new
// channels. It is safe for concurrent use.
//
// amqp091-go's own experimental recovery is not used: it reuses Channel
// values across reconnects, so an ack for a delivery from before the drop
// would be sent on the new channel under a tag that now names another
// message. Here every channel belongs to one connection generation and
// results for stale deliveries are dropped.
type Conn struct {
	cfg   Config
	log   *zap.Logger
	addrs []string // from cfg.URL
	// next is the index in addrs tried first by the next connectLoop. Only
	// the goroutine running connectLoop (Dial, then supervise) uses it.
	next int
	// reachable receives the index of an address at which a peer (see
	// peers) just connected.
	reachable chan int

	mu         sync.Mutex
	live       *liveConn     // nil while disconnected
	up         chan struct{} // closed when live becomes non-nil
	topologies []Topology

	reconnects atomic.Uint64
	closing    chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup
}

// liveConn is one connection generation. lost is closed when it ends.
type liveConn struct {
	conn *amqp.Connection
	addr string
	lost chan struct{}
}

// Dial connects to the broker and starts supervising the connection. It
// retries until ctx ends; it gives up at once on errors that a retry cannot
// fix (bad credentials, unknown vhost). Close releases it.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	addrs, _ := ParseURLs(cfg.URL) // checked by Validate
	c := &Conn{
		cfg:       cfg,
		log:       cfg.Logger.Named("broker").With(zap.String("url", redact.URL(cfg.URL))),
		addrs:     addrs,
		reachable: make(chan int, 1),
		up:        make(chan struct{}),
		closing:   make(chan struct{}),
	}
	peers.join(c)
	conn, err := c.connectLoop(ctx, true)
	if err != nil {
		peers.leave(c)
		return nil, err
	}
	c.setLive(conn)
	c.log.Info("connected", zap.String("address", redact.URL(c.addrs[c.next])))
	c.wg.Add(1)
	go c.supervise(conn)
	return c, nil
}

// Close stops supervision and closes the connection. Channels opened on it
// close too. It waits for the supervisor to end.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	c.wg.Wait()
	peers.leave(c)
	return nil
}

// Address returns the address (from Config.URL, password redacted) of the
// live connection, or "" while disconnected.
func (c *Conn) Address() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil {
		return ""
	}
	return redact.URL(c.live.addr)
}

// Connected reports whether a connection is up right now.
func (c *Conn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live != nil
}

// Reconnects counts successful reconnections since Dial.
func (c *Conn) Reconnects() uint64 { return c.reconnects.Load() }

// current waits for a live connection until ctx ends or c closes.
func (c *Conn) current(ctx context.Context) (*liveConn, error) {
	for {
		c.mu.Lock()
		live, up := c.live, c.up
		c.mu.Unlock()
		if live != nil {
			return live, nil
		}
		select {
		case <-up:
		case <-c.closing:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the broker connection: %w", ctx.Err())
		}
	}
}

// channel opens a channel on the live connection, waiting for one if
// needed. The returned lost channel closes when that connection ends.
func (c *Conn) channel(ctx context.Context) (*amqp.Channel, <-chan struct{}, error) {
	for {
		live, err := c.current(ctx)
		if err != nil {
			return nil, nil, err
		}
		ch, err := live.conn.Channel()
		if err == nil {
			return ch, live.lost, nil
		}
		if !live.conn.IsClosed() {
			return nil, nil, fmt.Errorf("opening a channel: %w", err)
		}
		// The connection died under us; wait for the supervisor to notice.
		select {
		case <-live.lost:
		case <-c.closing:
			return nil, nil, ErrClosed
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("opening a channel: %w", ctx.Err())
		}
	}
}

func (c *Conn) setLive(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = &liveConn{conn: conn, addr: c.addrs[c.next], lost: make(chan struct{})}
	close(c.up)
}

func (c *Conn) setDown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil {
		return
	}
	close(c.live.lost)
	c.live = nil
	c.up = make(chan struct{})
}

// supervise watches the live connection and replaces it when it ends.
func (c *Conn) supervise(conn *amqp.Connection) {
	defer c.wg.Done()
	for {
		reason, closing := c.watch(conn)
		c.setDown()
		if closing {
			_ = conn.Close()
			c.log.Info("connection closed")
			return
		}
		c.log.Warn("connection lost, reconnecting", zap.String("reason", reason),
			zap.String("address", redact.URL(c.addrs[c.next])))
		c.next = (c.next + 1) % len(c.addrs) // that node may be gone: try the others first
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		next, err := c.connectLoop(ctx, false)
		cancel()
		if err != nil {
			c.log.Info("connection closed")
			return
		}
		conn = next
		c.reconnects.Add(1)
		c.setLive(conn)
		c.log.Info("reconnected", zap.Uint64("reconnects", c.reconnects.Load()),
			zap.String("address", redact.URL(c.addrs[c.next])))
	}
}

// watch blocks until conn closes (returning the reason) or Close is called.
func (c *Conn) watch(conn *amqp.Connection) (reason string, closing bool) {
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	for {
		select {
		case <-c.closing:
			return "", true
		case err := <-closed:
			if err == nil {
				return "closed", false
			}
			return err.Error(), false
		case b := <-blocked:
			if b.Active {
				c.log.Warn("broker blocked publishing", zap.String("reason", b.Reason))
			} else {
				c.log.Info("broker unblocked publishing")
			}
		}
	}
}

// connectLoop dials and declares topology until it succeeds or ctx ends.
// A round tries every address once, from c.next on; rounds are separated
// by a jittered backoff, cut short when a peer reaches the broker. On
// success c.next is the address connected to.
func (c *Conn) connectLoop(ctx context.Context, first bool) (*amqp.Connection, error) {
	bo := backoff{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff}
	for round := 1; ; round++ {
		conn, err := c.connectRound(first)
		if conn != nil {
			peers.reached(c, c.next)
			return conn, nil
		}
		if first && permanent(err) {
			return nil, fmt.Errorf("connecting to %s: %w", redact.URL(c.addrs[c.next]), err)
		}
		wait := bo.next()
		c.log.Warn("connect failed", zap.Error(err), zap.Int("attempt", round), zap.Duration("retry_in", wait))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case idx := <-c.reachable:
			t.Stop()
			c.next = idx
			bo.reset()
			c.log.Info("another connection reached the broker, retrying now",
				zap.String("address", redact.URL(c.addrs[idx])))
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connecting to %s: %w (last error: %w)", redact.URL(c.cfg.URL), ctx.Err(), err)
		case <-c.closing:
			t.Stop()
			return nil, ErrClosed
		}
	}
}

// connectRound tries each address once, from c.next on, and returns the
// first connection made, or the last error. A permanent error on the first
// Dial ends the round at once: the addresses share their credentials.
func (c *Conn) connectRound(first bool) (*amqp.Connection, error) {
	var err error
	start := c.next
	for i := range c.addrs {
		idx := (start + i) % len(c.addrs)
		c.next = idx
		var conn *amqp.Connection
		conn, err = c.connectOnce(c.addrs[idx])
		if err == nil {
			return conn, nil
		}
		if first && permanent(err) {
			return nil, err
		}
		if len(c.addrs) > 1 {
			c.log.Debug("address did not answer", zap.String("address", redact.URL(c.addrs[idx])), zap.Error(err))
		}
	}
	c.next = start
	return nil, err
}

// connectOnce dials addr and declares all registered topologies.
func (c *Conn) connectOnce(addr string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.cfg.Name)
	conn, err := amqp.DialConfig(addr, amqp.Config{
		Heartbeat: c.cfg.Heartbeat,
		// A copy: the client library writes the server name into the
		// config it is given, and connections that share one (a worker's
		// consumer and publisher) dial at the same time.
		TLSClientConfig: c.cfg.TLS.Clone(),
		Properties:      props,
		Dial:            c.dial,
	})
	if err != nil {
		return nil, redact.Error(err, addr)
	}
	c.mu.Lock()
	tops := append([]Topology(nil), c.topologies...)
	c.mu.Unlock()
	for _, t := range tops {
		if err := declareOn(conn, t); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// dial opens the socket of a connection, its writes coalesced (see
// coalescingConn).
func (c *Conn) dial(network, addr string) (net.Conn, error) {
	conn, err := amqp.DefaultDial(c.cfg.DialTimeout)(network, addr)
	if err != nil {
		return nil, err
	}
	return newCoalescingConn(conn), nil
}

// Declare declares t now and again after every reconnect. A queue that
// exists with other arguments fails with a *DriftError.
func (c *Conn) Declare(ctx context.Context, t Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for {
		live, err := c.current(ctx)
		if err != nil {
			return err
		}
		err = declareOn(live.conn, t)
		if err == nil {
			c.mu.Lock()
			c.topologies = append(c.topologies, t)
			c.mu.Unlock()
			return nil
		}
		if !isConnErr(err) {
			return err
		}
		select {
		case <-live.lost:
		case <-ctx.Done():
			return fmt.Errorf("declaring topology: %w", ctx.Err())
		}
	}
}

// permanent reports dial errors that no retry can fix.
func permanent(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed
	}
	return errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) ||
		errors.Is(err, amqp.ErrSASL)
}

// isConnErr reports errors caused by the connection going away.
func isConnErr(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // a caller's deadline, which net.Error also matches
	}
	if errors.Is(err, amqp.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ae *amqp.Error
	return errors.As(err, &ae) && !ae.Recover
}

// Redeclare declares every topology given to Declare again, for when a
// queue was deleted under a running worker.
func (c *Conn) Redeclare(ctx context.Context) error {
	live, err := c.current(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	tops := append([]Topology(nil), c.topologies...)
	c.mu.Unlock()
	for _, t := range tops {
		if err := declareOn(live.conn, t); err != nil {
			return err
		}
	}
	c.log.Info("topology declared again")
	return nil
}
