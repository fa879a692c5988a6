package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/worker"
)

// ReadyLine is what IdleChild prints when its worker is ready.
const ReadyLine = "ready"

// Timeouts of idle-rss.
const (
	idleReadyTimeout = time.Minute
	idleStopTimeout  = 15 * time.Second
)

// idleWorker is the worker of idle-rss: IdleRoutes routes on classic
// queues named prefix-0, prefix-1, ..., dedupe off, no-op handlers.
func idleWorker(amqpURL, prefix string) (*worker.Worker, error) {
	w, err := worker.New(worker.Config{
		AMQPURL:   amqpURL,
		Dedupe:    worker.DedupeOff,
		QueueType: broker.Classic,
		Logger:    zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	noop := worker.HandlerFunc(func(context.Context, *worker.Delivery) error { return nil })
	for i := range IdleRoutes {
		if err := w.Handle(worker.Route{Queue: prefix + "-" + strconv.Itoa(i), Handler: noop}); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// IdleChild is the child process of idle-rss: it runs a worker with
// IdleRoutes routes on queues named after prefix, writes ReadyLine to
// stdout once the worker is ready, and then idles until ctx ends, SIGTERM
// or SIGINT arrives, or stdin reaches its end (the parent went away).
// It returns after the worker has drained.
func IdleChild(ctx context.Context, amqpURL, prefix string, stdin io.Reader, stdout io.Writer) error {
	if prefix == "" {
		return errors.New("idle child: a queue name prefix is required")
	}
	w, err := idleWorker(amqpURL, prefix)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if stdin != nil {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			cancel()
		}()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !w.Ready() {
		select {
		case err := <-runErr:
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("idle child: the worker ended before it was ready: %w", err)
		case <-tick.C:
		}
	}
	tick.Stop()
	if _, err := fmt.Fprintln(stdout, ReadyLine); err != nil {
		cancel()
		<-runErr //nolint:errcheck // the write's error is the one to report
		return err
	}
	return <-runErr
}

// idleRSS runs IdleChild in a child process and reads its VmRSS after it
// has idled for IdleSettle.
func (e *env) idleRSS(ctx context.Context, round int) (Round, error) {
	if e.opts.IdleCommand == nil {
		return Round{}, errors.New("no command to start the idle child with (Options.IdleCommand)")
	}
	prefix := e.name("idle", round)
	defer func() {
		w, err := idleWorker(e.opts.AMQPURL, prefix)
		if err != nil {
			e.warn("listing the idle worker's queues: %v", err)
			return
		}
		e.deleteQueues(queueNames(w.Topology())...)
	}()
	cmd, err := e.opts.IdleCommand(e.opts.AMQPURL, prefix)
	if err != nil {
		return Round{}, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Round{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Round{}, err
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Round{}, fmt.Errorf("starting the idle child: %w", err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	waited := false
	wait := func(timeout time.Duration) error {
		if waited {
			return nil
		}
		go func() { exited <- cmd.Wait() }()
		waited = true
		select {
		case err := <-exited:
			return err
		case <-time.After(timeout):
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed: its exit status says nothing more
			return fmt.Errorf("did not exit within %s of SIGTERM; killed", timeout)
		}
	}
	kill := func() {
		_ = cmd.Process.Kill()
		_ = wait(idleStopTimeout)
	}
	childErr := func(what string) error {
		return fmt.Errorf("idle child %s; its stderr: %q", what, strings.TrimSpace(stderr.String()))
	}

	t := time.NewTimer(idleReadyTimeout)
	defer t.Stop()
	select {
	case line, ok := <-lines:
		if !ok || line != ReadyLine {
			kill()
			return Round{}, childErr(fmt.Sprintf("printed %q instead of %q", line, ReadyLine))
		}
	case <-t.C:
		kill()
		return Round{}, childErr(fmt.Sprintf("not ready within %s", idleReadyTimeout))
	case <-ctx.Done():
		kill()
		return Round{}, ctx.Err()
	}
	readyAfter := time.Since(start)
	select {
	case <-time.After(e.opts.IdleSettle):
	case <-ctx.Done():
		kill()
		return Round{}, ctx.Err()
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	rss, rssErr := procStatus(pid, "VmRSS")
	hwm, _ := procStatus(pid, "VmHWM")
	stopStart := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = stdin.Close()
	exitErr := wait(idleStopTimeout)
	stopTook := time.Since(stopStart)
	if rssErr != nil {
		return Round{}, fmt.Errorf("reading the idle child's RSS: %w", rssErr)
	}
	if exitErr != nil {
		e.warn("%s", childErr("shutdown: "+exitErr.Error()))
	}
	return Round{
		Value: float64(rss) / (1 << 20),
		Detail: fmt.Sprintf("VmRSS of an idle worker with %d routes, %s after ready (VmHWM %s MiB); ready after %s; SIGTERM to exit took %s",
			IdleRoutes, e.opts.IdleSettle, mib(hwm), readyAfter.Round(time.Millisecond), stopTook.Round(time.Millisecond)),
	}, nil
}

// lockedBuffer is a bytes.Buffer safe for the writer goroutine of
// exec.Cmd and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
