package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Proc is a child process of a test (a worker program) whose output goes
// to a log file.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once it has exited
	err     error         // its exit status, once done is closed
}

// StartProc starts bin with env added to this process's environment, its
// output to logDir/name.log. At the end of the test it is killed if it
// still runs, and the end of its log is logged if the test failed.
func StartProc(t testing.TB, bin, name, logDir string, env ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, LogPath: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("log of %s (its end):\n%s", p.Name, p.Log())
		}
	})
	return p
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit status once it has exited: nil for exit 0.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Kill ends the process as a crash would (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Term drains the process (SIGTERM) and fails t unless it exits 0 within
// timeout; then it is killed.
func (p *Proc) Term(t testing.TB, timeout time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.Name, p.err)
		}
	case <-time.After(timeout):
		p.Kill()
		t.Errorf("%s did not exit within %s of SIGTERM; killed", p.Name, timeout)
	}
}

// Log is the end of the process's output, up to 8 KB.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}
