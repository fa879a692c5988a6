package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/warrenmq/warren/worker"
)

// execHandler runs a command per message: the body on standard input, the
// metadata in WARREN_MSG_* environment variables. Exit 0 acks, exit 65
// dead-letters, any other exit, a crash or the timeout retries.
type execHandler struct{ argv []string }

func (h *execHandler) Handle(ctx context.Context, d *worker.Delivery) error {
	cmd := exec.CommandContext(ctx, h.argv[0], h.argv[1:]...)
	cmd.Stdin = bytes.NewReader(d.Body)
	cmd.Env = os.Environ()
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
