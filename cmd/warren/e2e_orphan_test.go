//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/testenv"
)

// markEnv is the environment variable that marks the processes of one
// test: warren passes it to its handlers, and they to their children.
const markEnv = "ORPHAN_TEST_MARK"

// orphanScript is a handler that, for a message with body "slow" on its
// first attempt, starts two children that sleep for a minute, one in its
// process group and one in a session of its own (setsid, as a daemon
// would), logs "spawned <id> <attempt>" and waits for them; for a body
// "leave" it starts the same two children, logs "spawned" and exits 0 at
// once, leaving them behind. Other messages log "end" and exit 0.
func orphanScript(t *testing.T) (string, lineLog) {
	t.Helper()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Fatalf("the test needs setsid (util-linux): %v", err)
	}
	log := lineLog(filepath.Join(t.TempDir(), "handled.log"))
	script := writeScript(t, fmt.Sprintf(`body=$(cat)
if [ "$WARREN_MSG_ATTEMPT" = 1 ] && { [ "$body" = slow ] || [ "$body" = leave ]; }; then
	sleep 60 &
	setsid sleep 60 &
	printf 'spawned %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" >> '%[1]s'
	if [ "$body" = leave ]; then exit 0; fi
	wait
fi
printf 'end %%s %%s\n' "$WARREN_MSG_MESSAGE_ID" "$WARREN_MSG_ATTEMPT" >> '%[1]s'
`, log))
	return script, log
}

// marked lists the live processes (zombies aside) whose environment
// holds markEnv=mark, but for the process except, as "pid: argv".
func marked(mark string, except int) []string {
	want := []byte(markEnv + "=" + mark + "\x00")
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == except || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 && bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z")) {
				continue
			}
		}
		argv, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d: %s", pid, strings.TrimSpace(strings.ReplaceAll(string(argv), "\x00", " "))))
	}
	return out
}

// markTest returns a fresh mark and, at cleanup, kills whatever process
// still carries it, so that a failed run leaves nothing behind.
func markTest(t *testing.T) string {
	t.Helper()
	mark := testenv.Name(t)
	t.Cleanup(func() {
		for _, p := range marked(mark, 0) {
			pid, _ := strconv.Atoi(strings.SplitN(p, ":", 2)[0])
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return mark
}

// waitNoneLeft waits until no process of the test is left but warren.
func waitNoneLeft(t *testing.T, mark string, w *proc, what string) {
	t.Helper()
	except := 0
	if !w.exited() {
		except = w.cmd.Process.Pid
	}
	deadline := time.Now().Add(settleWait)
	for {
		left := marked(mark, except)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; still running:\n%s", settleWait, what, strings.Join(left, "\n"))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestE2EExecNoOrphans: the processes of `run -exec` handlers (the
// command, a child in its process group and a child that left it for a
// session of its own) die with their worker, with the handler timeout,
// with a drain that runs out of time, and when the command exits.
func TestE2EExecNoOrphans(t *testing.T) {
	t.Parallel()

	t.Run("worker SIGKILLed", func(t *testing.T) {
		t.Parallel()
		const handlers = 3
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		mark := markTest(t)
		e := baseEnv().with(markEnv, mark)
		script, log := orphanScript(t)
		w := startRun(t, e, "-queue", q, "-exec", script, "-concurrency", strconv.Itoa(handlers))
		for i := range handlers {
			publish(t, e, q, fmt.Sprintf("m-%d", i), "slow")
		}
		waitFor(t, settleWait, "every handler to start its children", func() bool {
			return log.count() == handlers
		})
		// Per handler: the guard, the shell and its two children.
		want := 4 * handlers
		var running []string
		waitFor(t, settleWait, fmt.Sprintf("%d handler processes running", want), func() bool {
			running = marked(mark, w.cmd.Process.Pid)
			return len(running) == want
		})
		if err := w.cmd.Process.Kill(); err != nil {
			t.Fatalf("SIGKILL: %v", err)
		}
		<-w.done
		waitNoneLeft(t, mark, w, "every handler process to die with the SIGKILLed worker")
		if got := strings.Join(log.lines(), "|"); strings.Contains(got, "end") {
			t.Errorf("a handler ran to its end after its worker was killed: %q", got)
		}
	})

	t.Run("handler timeout", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		mark := markTest(t)
		e := baseEnv().with(markEnv, mark)
		script, log := orphanScript(t)
		// Long enough for the first attempt to start its children on a
		// loaded machine (a guard, a shell, two sleeps): at 1s all three
		// attempts once timed out before that.
		w := startRun(t, e, "-queue", q, "-exec", script, "-timeout", "5s")
		publish(t, e, q, "m-slow", "slow")
		waitFor(t, settleWait, "the first attempt to start its children", func() bool { return log.has("spawned m-slow 1") == 1 })
		waitFor(t, settleWait, "the retry after the timeout", func() bool { return log.has("end m-slow 2") == 1 })
		waitNoneLeft(t, mark, w, "the timed-out handler's processes to die")
		w.stop()
	})

	t.Run("drain out of time", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		mark := markTest(t)
		e := baseEnv().with(markEnv, mark, "WARREN_SHUTDOWN_TIMEOUT", "1s")
		script, log := orphanScript(t)
		w := startRun(t, e, "-queue", q, "-exec", script)
		publish(t, e, q, "m-slow", "slow")
		waitFor(t, settleWait, "the handler to start its children", func() bool { return log.has("spawned m-slow 1") == 1 })
		w.stop()
		waitNoneLeft(t, mark, w, "the cancelled handler's processes to die")
	})

	t.Run("command exits", func(t *testing.T) {
		t.Parallel()
		admin := testenv.NewAdmin(t)
		q := queueNames(t, admin)
		mark := markTest(t)
		e := baseEnv().with(markEnv, mark)
		script, log := orphanScript(t)
		w := startRun(t, e, "-queue", q, "-exec", script)
		publish(t, e, q, "m-leave", "leave")
		waitFor(t, settleWait, "the handler to start its children", func() bool { return log.has("spawned m-leave 1") == 1 })
		waitNoneLeft(t, mark, w, "the children the command left behind to die")
		w.stop()
	})
}
