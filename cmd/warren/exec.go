package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmq/warren/worker"
)

// execHandler runs a command per message: the body on standard input, the
// metadata in WARREN_MSG_* environment variables. Exit 0 acks, exit 65
// dead-letters, exit 75 says the dependency is down (the message goes
// back, the route pauses), any other exit, a crash or the timeout retries. The
// command runs under an exec guard (see guard.go), which kills it with
// everything it started when the handler's context ends or warren dies.
type execHandler struct {
	argv []string
	self string // this binary, started again as the guard
}

func newExecHandler(argv []string) (*execHandler, error) {
	if len(argv) == 0 {
		return nil, errors.New("run: -exec names no command")
	}
	self, err := selfExe()
	if err != nil {
		return nil, fmt.Errorf("run: -exec needs the path of the warren binary: %w", err)
	}
	return &execHandler{argv: argv, self: self}, nil
}

// handlerEnv is warren's environment without its own settings, which
// hold passwords the handler has no need of, and without a trace context
// of warren's own (the handler gets its message's).
func handlerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") && !strings.HasPrefix(kv, "TRACEPARENT=") && !strings.HasPrefix(kv, "TRACESTATE=") {
			env = append(env, kv)
		}
	}
	return env
}

func (h *execHandler) Handle(ctx context.Context, d *worker.Delivery) error {
	life, err := newLifeline()
	if err != nil {
		return err
	}
	defer life.r.Close()
	defer func() { _ = life.cut() }() // cut already, when the guard was told to stop
	args := append([]string{guardCommand, "--"}, h.argv...)
	cmd := exec.CommandContext(ctx, h.self, args...)
	cmd.Args[0] = "warren"              // as ps shows it, rather than /proc/self/exe
	cmd.ExtraFiles = []*os.File{life.r} // the guard's lifelineFD
	// The guard and the command each get a process group of their own: a
	// Ctrl-C in a terminal reaches warren (which drains) rather than the
	// handlers in flight.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Cutting the lifeline makes the guard kill the command's group; if
	// the guard does not exit within WaitDelay, it is killed (and on
	// Linux the command with it, by its parent-death signal).
	cmd.Cancel = life.cut
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = bytes.NewReader(d.Body)
	cmd.Env = handlerEnv()
	for _, kv := range metadata(d) {
		cmd.Env = append(cmd.Env, "WARREN_MSG_"+kv[0]+"="+kv[1])
	}
	// The handler run's trace context, as OpenTelemetry SDKs read it
	// from the environment.
	for k, v := range handlerTrace(ctx, d) {
		cmd.Env = append(cmd.Env, strings.ToUpper(k)+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = os.Stdout
	err = cmd.Run()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(stderr.String())
	if len(msg) > 512 {
		msg = msg[len(msg)-512:]
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == ExitPermanent {
		return worker.Permanent(fmt.Errorf("%s exited with %d: %s", h.argv[0], ExitPermanent, msg))
	}
	if errors.As(err, &ee) && ee.ExitCode() == ExitUnavailable {
		return worker.Unavailable(fmt.Errorf("%s exited with %d: %s", h.argv[0], ExitUnavailable, msg))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", h.argv[0], ctx.Err())
	}
	return fmt.Errorf("%s failed: %w: %s", h.argv[0], err, msg)
}
