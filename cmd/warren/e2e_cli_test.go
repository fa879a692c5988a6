package main

import (
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
)

// TestE2EUsage: usage and help, unknown commands, flags.
func TestE2EUsage(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	r := warren(t, e, nil)
	if r.code == 0 || !strings.Contains(r.stderr, "usage: warren <command>") || !strings.Contains(r.stderr, "publish") {
		t.Errorf("no arguments: want a non-zero exit and the usage\n%s", r)
	}
	for _, h := range []string{"-h", "help"} {
		if r := warren(t, e, nil, h); r.code != 0 || !strings.Contains(r.stderr, "usage: warren <command>") {
			t.Errorf("%s: want exit 0 and the usage\n%s", h, r)
		}
	}
	r = warren(t, e, nil, "run", "-h")
	if r.code != 0 {
		t.Errorf("run -h: want exit 0\n%s", r)
	}
	for _, f := range []string{"usage: warren run", "-queue", "-exec", "-http", "-concurrency", "-timeout"} {
		if !strings.Contains(r.stderr+r.stdout, f) {
			t.Errorf("run -h does not print %q\n%s", f, r)
		}
	}
	if strings.Contains(r.stderr, "warren: ") {
		t.Errorf("run -h printed an error\n%s", r)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "-exec", "true"}, "-queue is required"},
		{[]string{"run", "-queue", "q"}, "one of -exec or -http"},
		{[]string{"run", "-queue", "q", "-exec", "true", "-http", "http://x/"}, "not both"},
		{[]string{"run", "-queue", "q", "-http", "ftp://x/"}, "-http must be"},
		{[]string{"run", "-queue", "q", "-exec", "true", "extra"}, "unexpected argument"},
		{[]string{"run", "-queue", "q", "-exec", "true", "-nosuchflag"}, "flag provided but not defined"},
		{[]string{"dlq"}, "want a subcommand"},
		{[]string{"dlq", "frob"}, "unknown subcommand"},
		{[]string{"dlq", "ls"}, "name the queues"},
		{[]string{"dlq", "show"}, "name one queue"},
		{[]string{"dlq", "replay"}, "name one queue"},
		{[]string{"dlq", "purge"}, "name one queue"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			r := warren(t, e, nil, c.args...)
			if r.code == 0 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("want a non-zero exit and %q in stderr\n%s", c.want, r)
			}
		})
	}
}

// TestE2EBadEnv: invalid WARREN_* values stop `run` before it connects,
// naming the variable and never echoing a password.
func TestE2EBadEnv(t *testing.T) {
	t.Parallel()
	e := baseEnv()
	run := []string{"run", "-queue", "never-declared", "-exec", "true"}
	for _, c := range []struct {
		kv   []string
		want string
	}{
		{[]string{"WARREN_CONCURRENCY", "-1"}, "WARREN_CONCURRENCY"},
		{[]string{"WARREN_CONCURRENCY", "many"}, "WARREN_CONCURRENCY"},
		{[]string{"WARREN_RETRY_DELAYS", "1s,500ms"}, "WARREN_RETRY_DELAYS"},
		{[]string{"WARREN_MAX_ATTEMPTS", "0x"}, "WARREN_MAX_ATTEMPTS"},
		{[]string{"WARREN_QUEUE_TYPE", "stream"}, "WARREN_QUEUE_TYPE"},
		{[]string{"WARREN_AMQP_URL", "http://guest:s3cr3tpassw0rd@127.0.0.1:5672/"}, "WARREN_AMQP_URL"},
		{[]string{"WARREN_DEDUPE", "on", "WARREN_REDIS_URL", "mysql://u:s3cr3tpassw0rd@h/"}, "WARREN_REDIS_URL"},
	} {
		r := warren(t, e.with(c.kv...), nil, run...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: want a non-zero exit and %q in stderr\n%s", c.kv, c.want, r)
		}
	}
	if queueExists(t, "never-declared") {
		t.Error("run declared its queue despite a bad configuration")
	}
}

// TestE2ERedaction: the URL's password is redacted in the start log and
// in connection errors, and appears in no output.
func TestE2ERedaction(t *testing.T) {
	t.Parallel()
	admin := testenv.NewAdmin(t)
	q := queueNames(t, admin)
	// The test broker (3.10 on 5672 or 4.0 on 5673 in CI) with guest:guest.
	tu, err := neturl.Parse(testenv.AMQPURL())
	if pw, _ := tu.User.Password(); err != nil || tu.User.Username() != "guest" || pw != "guest" {
		t.Skipf("the test broker is not reached as guest:guest")
	}
	hostport := tu.Host
	url := "amqp://guest:guest@" + hostport + "/"
	e := baseEnv().with("WARREN_AMQP_URL", url)
	w := startRun(t, e, "-queue", q, "-exec", "true")
	w.stop()
	log := w.stderr.String()
	if !strings.Contains(log, "guest:xxxxx@"+hostport) {
		t.Errorf("the start log does not show the redacted URL\n%s", log)
	}
	if strings.Contains(log, "guest:guest@") {
		t.Errorf("the start log shows the password\n%s", log)
	}

	// Refused credentials fail at once (after the broker's own delay of
	// about 3s), naming the URL without its password.
	bad := "amqp://guest:wr0ngpassw0rd@" + hostport + "/"
	for _, args := range [][]string{
		{"run", "-queue", q, "-exec", "true"},
		{"publish", "-routing-key", q, "x"},
		{"dlq", "ls", q},
		{"topology", "plan", "-queue", q},
	} {
		t.Run("wrong password "+args[0], func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := warren(t, baseEnv().with("WARREN_AMQP_URL", bad), nil, args...)
			if r.code == 0 || !strings.Contains(r.stderr, "guest:xxxxx@") || !strings.Contains(r.stderr, "403") {
				t.Errorf("want a non-zero exit, the redacted URL and the 403\n%s", r)
			}
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("refused credentials took %s to fail; they should fail at once", took)
			}
		})
	}
}
