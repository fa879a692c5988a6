package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Rabbit4 is a private RabbitMQ 4 node of one test, started inside the
// Debian 13 root of scripts/rabbitmq4.sh with its own name, ports and data
// folder. A test may reconfigure it freely.
type Rabbit4 struct {
	t      testing.TB
	script string
	node   string
	port   int
	env    []string
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// StartRabbit4 starts a private RabbitMQ 4 node and stops it when t ends.
// WARREN_TEST_RABBITMQ4 names scripts/rabbitmq4.sh (`rabbitmq4.sh test`
// sets it); without it the test is skipped.
func StartRabbit4(t testing.TB) *Rabbit4 {
	t.Helper()
	script := os.Getenv("WARREN_TEST_RABBITMQ4")
	if script == "" {
		t.Skip("needs a private RabbitMQ 4 node: run through `bash scripts/rabbitmq4.sh test` (sets WARREN_TEST_RABBITMQ4)")
	}
	port, dist := freePort(t), freePort(t)
	suffix := Name(t)
	suffix = suffix[len(suffix)-8:]
	r := &Rabbit4{t: t, script: script, node: "rabbit4t" + suffix + "@localhost", port: port,
		out: &lockedBuffer{}, exited: make(chan struct{})}
	conf := "/etc/warren-rabbit4/" + suffix + ".conf"
	r.env = append(os.Environ(),
		"RABBITMQ_NODENAME="+r.node,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_CONFIG_FILE="+conf,
	)
	r.exec("sh", "-c", r.removeFiles(conf)+fmt.Sprintf(" && printf 'listeners.tcp.local = 127.0.0.1:%d\\n' > %s", port, conf))
	r.cmd = exec.Command("bash", script, "exec", "rabbitmq-server")
	r.cmd.Env = r.env
	startNode(t, "private RabbitMQ 4 node", r.cmd, r.out, r.exited, r.URL(), func() { r.stop(conf) })
	return r
}

// removeFiles is a shell command that removes the node's config, data
// and logs (node names are letters, digits and @).
func (r *Rabbit4) removeFiles(conf string) string {
	return fmt.Sprintf("rm -rf %s /var/lib/warren-rabbit4/%s* /var/log/warren-rabbit4/%s*", conf, r.node, r.node)
}

// URL is the node's AMQP URL.
func (r *Rabbit4) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", r.port) }

// Eval runs an Erlang expression on the node (rabbitmqctl eval).
func (r *Rabbit4) Eval(expr string) string {
	r.t.Helper()
	return r.exec("rabbitmqctl", "-q", "eval", expr)
}

func (r *Rabbit4) exec(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("bash", append([]string{r.script, "exec"}, args...)...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("%v on the private RabbitMQ 4 node: %v: %s", args, err, out)
	}
	return string(out)
}

func (r *Rabbit4) stop(conf string) {
	cmd := exec.Command("bash", r.script, "exec", "rabbitmqctl", "-q", "stop")
	cmd.Env = r.env
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Logf("stopping the private RabbitMQ 4 node: %v: %s", err, out)
	}
	select {
	case <-r.exited:
	case <-time.After(time.Minute):
		r.t.Errorf("the private RabbitMQ 4 node did not stop within a minute; killing it")
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
	cmd = exec.Command("bash", r.script, "exec", "sh", "-c", r.removeFiles(conf))
	cmd.Env = r.env
	_ = cmd.Run()
}

// lockedBuffer is a buffer a child process writes to while a test may
// read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
