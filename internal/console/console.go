package console

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
)

// Console is the web UI. Serve runs it.
type Console struct {
	cfg   Config
	log   *zap.Logger
	guard *guard
	pub   *broker.Publisher
	pages pages

	// busy serialises the work that reads dead-letter queues (scans,
	// finds, replays, purges): a reader holds what it read until it is
	// done, so two at once would each see part of a queue.
	busy chan struct{}

	ctx context.Context // Serve's; ends the console's goroutines
	wg  sync.WaitGroup

	mu    sync.Mutex
	index indexState
	jobs  jobList
}

// New checks cfg and prepares a console.
func New(cfg Config) (*Console, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	p, err := loadPages()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.Named("console")
	return &Console{cfg: cfg, log: log, guard: newGuard(cfg.Auth, log), pages: p, busy: make(chan struct{}, 1)}, nil
}

// Serve answers on ln until ctx is done, then stops within five seconds:
// it waits for running jobs, which stop at their next message.
func (c *Console) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.ctx = ctx
	c.pub = c.cfg.Conn.NewPublisher()
	defer c.pub.Close()
	h := c.routes()
	if a := c.cfg.Auth; a.Insecure && a.Token == "" && a.User == "" && loopback(ln.Addr()) {
		h = loopbackHosts(h, c.log)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	c.rescan("start")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	c.log.Info("console: listening", zap.String("addr", ln.Addr().String()), zap.Bool("read_only", c.cfg.ReadOnly))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	shut, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shut)
	c.wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	c.log.Info("console: stopped")
	return nil
}

// hold takes the broker work slot, or fails when ctx ends first.
func (c *Console) hold(ctx context.Context) (release func(), err error) {
	select {
	case c.busy <- struct{}{}:
		return func() { <-c.busy }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// goOwned runs fn in a goroutine Serve waits for.
func (c *Console) goOwned(fn func(ctx context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn(c.ctx)
	}()
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.FileServerFS(assets))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.Handle("POST /login", c.guard.origin.Handler(http.HandlerFunc(c.loginPost)))
	mux.Handle("GET /{$}", c.guard.wrap(c.overviewPage))
	mux.Handle("GET /groups", c.guard.wrap(c.groupsPage))
	mux.Handle("GET /messages", c.guard.wrap(c.messagesPage))
	mux.Handle("GET /message", c.guard.wrap(c.messagePage))
	mux.Handle("GET /jobs/{id}", c.guard.wrap(c.jobPage))
	mux.Handle("GET /jobs/{id}/status", c.guard.wrap(c.jobStatus))
	mux.Handle("POST /rescan", c.guard.wrap(c.rescanPost))
	mux.Handle("POST /replay", c.guard.wrap(c.writing(c.replayPost, true)))
	mux.Handle("POST /purge", c.guard.wrap(c.writing(c.purgePost, false)))
	return secureHeaders(mux)
}

// writing refuses a state change in read-only mode; a dry run, where
// the action has one, changes nothing and passes.
func (c *Console) writing(next func(http.ResponseWriter, *http.Request, string), dryRuns bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, who string) {
		dryRun := dryRuns && r.PostFormValue("dry_run") != ""
		if c.cfg.ReadOnly && !dryRun {
			c.log.Warn("console: refused in read-only mode", zap.String("who", who), zap.String("action", r.URL.Path))
			http.Error(w, "403 forbidden: the console is read-only", http.StatusForbidden)
			return
		}
		next(w, r, who)
	}
}

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// loopback reports whether addr is a loopback address.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// loopbackHosts answers only requests that name a loopback host: a
// console without authentication on a loopback address trusts whoever
// reaches it, and a site the operator visits could otherwise reach it by
// pointing its own name at 127.0.0.1 (DNS rebinding), with its pages
// then counting as the console's own origin.
func loopbackHosts(next http.Handler, log *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
		local := host == "localhost" || strings.HasSuffix(host, ".localhost")
		if ip := net.ParseIP(host); !local && (ip == nil || !ip.IsLoopback()) {
			log.Warn("console: request for another host refused", zap.String("host", r.Host), zap.String("remote", r.RemoteAddr))
			http.Error(w, "421 misdirected request: without authentication the console answers only to a loopback host name", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
