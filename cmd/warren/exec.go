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
// dead-letters, any other exit, a crash or the timeout retries.
type execHandler struct{ argv []string }

// handlerEnv is warren's environment without its own settings, which
// hold passwords the handler has no need of.
func handlerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARREN_") {
			env = append(env, kv)
		}
	}
	return env
}

func (h *execHandler) Handle(ctx context.Context, d *worker.Delivery) error {
	cmd := exec.CommandContext(ctx, h.argv[0], h.argv[1:]...)
	// Its own process group: a timeout kills the handler with everything
	// it started, and a Ctrl-C in a terminal reaches warren (which drains)
	// rather than the handlers in flight.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Stdin = bytes.NewReader(d.Body)
	cmd.Env = handlerEnv()
	for _, kv := range metadata(d) {
		cmd.Env = append(cmd.Env, "WARREN_MSG_"+kv[0]+"="+kv[1])
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = os.Stdout
	err := cmd.Run()
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
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", h.argv[0], ctx.Err())
	}
	return fmt.Errorf("%s failed: %v: %s", h.argv[0], err, msg)
}
