package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// PrivateRabbit is a RabbitMQ node of one test, started from the host's
// own rabbitmq-server with its own node name, ports, data folder and
// enabled plugins, so that a test can use plugins the shared broker does
// not have. It is stopped and its files removed when the test ends.
type PrivateRabbit struct {
	port   int
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// rabbitServer is the host's rabbitmq-server, run as is (not the Debian
// wrapper that switches users): WARREN_TEST_RABBITMQ_SERVER overrides it.
func rabbitServer() string {
	if p := os.Getenv("WARREN_TEST_RABBITMQ_SERVER"); p != "" {
		return p
	}
	return "/usr/lib/rabbitmq/bin/rabbitmq-server"
}

// StartPrivateRabbit starts a private node with the given plugins enabled
// and waits (up to 3 minutes) until it answers AMQP.
func StartPrivateRabbit(t testing.TB, plugins ...string) *PrivateRabbit {
	t.Helper()
	bin := rabbitServer()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("a private RabbitMQ node needs %s (apt-get install rabbitmq-server, or set WARREN_TEST_RABBITMQ_SERVER): %v", bin, err)
	}
	dir := t.TempDir()
	port, dist := freePort(t), freePort(t)
	suffix := Name(t)
	node := "warrenpriv" + suffix[len(suffix)-8:] + "@localhost"
	write := func(name, body string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := write("rabbitmq.conf", fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\nloopback_users.guest = true\n", port))
	enabled := write("enabled_plugins", "["+strings.Join(plugins, ",")+"].\n")
	r := &PrivateRabbit{port: port, out: &lockedBuffer{}, exited: make(chan struct{})}
	r.cmd = exec.Command(bin)
	r.cmd.Dir = dir
	r.cmd.Env = append(os.Environ(),
		"HOME="+dir,
		"RABBITMQ_NODENAME="+node,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_CONFIG_FILE="+conf,
		"RABBITMQ_ENABLED_PLUGINS_FILE="+enabled,
		"RABBITMQ_MNESIA_BASE="+dir+"/mnesia",
		"RABBITMQ_LOG_BASE="+dir+"/log",
		"RABBITMQ_PID_FILE="+dir+"/pid",
	)
	startNode(t, "private RabbitMQ node", r.cmd, r.out, r.exited, r.URL(), r.stop)
	return r
}

// startNode starts a RabbitMQ node's command in a process group of its
// own, its output in out, closes exited when it ends, registers stop as
// the test's cleanup, and waits until the node answers AMQP at url (3
// minutes at most). what names the node in failures.
func startNode(t testing.TB, what string, cmd *exec.Cmd, out *lockedBuffer, exited chan struct{}, url string, stop func()) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a %s: %v", what, err)
	}
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(stop)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c, err := amqp.Dial(url)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("the %s exited during start-up:\n%s", what, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s did not answer AMQP within 3 minutes: %v\n%s", what, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// URL is the node's AMQP URL.
func (r *PrivateRabbit) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", r.port) }

// stop stops the node (SIGTERM is a clean stop), killing its process
// group if it does not stop within a minute.
func (r *PrivateRabbit) stop() {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(time.Minute):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
}
