package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Version is the test broker's version as it announces it ("3.10.8",
// "4.0.5").
func (a *Admin) Version() string {
	v, _ := a.conn.Properties["version"].(string)
	return v
}

// AtLeast reports whether the test broker's version is major.minor or
// later.
func (a *Admin) AtLeast(major, minor int) bool {
	parts := strings.SplitN(a.Version(), ".", 3)
	if len(parts) < 2 {
		a.t.Fatalf("the test broker announces no usable version: %q", a.Version())
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		a.t.Fatalf("the test broker announces no usable version: %q", a.Version())
	}
	return ma > major || (ma == major && mi >= minor)
}

// TryConsumers returns the number of consumers of queue, or -1 when the
// queue does not exist.
func (a *Admin) TryConsumers(queue string) int {
	ch, err := a.conn.Channel()
	if err != nil {
		a.t.Fatalf("admin channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return q.Consumers
}

// Rabbitmqctl runs rabbitmqctl against the test broker's node:
// WARREN_TEST_RABBITMQCTL is the command to run (split on spaces, e.g.
// "bash scripts/rabbitmq4.sh exec rabbitmqctl"), "rabbitmqctl" by default.
func Rabbitmqctl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	argv := strings.Fields(os.Getenv("WARREN_TEST_RABBITMQCTL"))
	if len(argv) == 0 {
		argv = []string{"rabbitmqctl"}
	}
	out, err := exec.Command(argv[0], append(argv[1:], args...)...).CombinedOutput()
	return string(out), err
}

// Channel opens a channel on the admin connection, closed at the end of
// the test.
func (a *Admin) Channel() *amqp.Channel {
	a.t.Helper()
	ch := a.channel()
	a.t.Cleanup(func() { _ = ch.Close() })
	return ch
}
