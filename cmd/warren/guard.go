package main

// The exec guard: how no handler process outlives its worker.
//
// `warren run -exec` does not start the handler's command itself. It
// starts itself again in a hidden mode, the guard (`warren __exec-guard
// -- command args`), with one extra file: the read end of a pipe whose
// write end only the worker holds, the lifeline. The guard starts the
// command in a process group of its own and then waits for either of two
// things:
//
//   - the command exits: the guard kills what the command left running in
//     its process group (and, on Linux, every other descendant, see
//     below) and exits with the command's exit code;
//   - the lifeline reaches end of file: the worker closed it, because the
//     handler's context ended (timeout, drain running out of time), or the
//     worker process is gone, whatever killed it: the kernel closes a dead
//     process's files, SIGKILL included. The guard kills the command's
//     whole process group at once with SIGKILL, then cleans up as above.
//
// A pipe rather than a parent-death signal tells the guard that the
// worker died: it fires when the last holder of the write end, the
// process, is gone, never because one thread of the Go runtime ended
// (PR_SET_PDEATHSIG follows the thread that forked the child), and it
// cannot be missed when the worker dies before the guard is listening
// (the read then returns end of file at once).
//
// On Linux the guard also
//
//   - starts the command with a parent-death signal (SIGKILL), from a
//     thread locked for the guard's whole life, so that the command dies
//     even if the guard itself is killed with SIGKILL;
//   - makes itself a child subreaper (PR_SET_CHILD_SUBREAPER): a
//     descendant that left the command's process group (setsid, a
//     double fork) is re-parented to the guard when its parent ends, and
//     the guard kills such re-parented processes until it has no child
//     left;
//   - waits for the command's exit without reaping it (waitid WNOWAIT),
//     so that its process ID, which names the group, cannot be reused
//     before the group is killed.
//
// Elsewhere the guard does what the OS allows: the lifeline and the
// process group kill work on every Unix; the parent-death signal and the
// subreaper do not exist, so a process that left the group survives.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
)

// guardCommand is the hidden first argument that runs the binary as an
// exec guard. It is not listed in the usage: only the exec bridge uses it.
const guardCommand = "__exec-guard"

// lifelineFD is the guard's file descriptor of the lifeline's read end:
// the first of exec.Cmd.ExtraFiles.
const lifelineFD = 3

// exitGuardFailed is the guard's exit code when it cannot start the
// command, as a shell's for a command not found.
const exitGuardFailed = 127

// runGuard is the guard's main: args are what follows guardCommand,
// "--" then the command line. It returns the exit code.
func runGuard(args []string) int {
	if len(args) < 2 || args[0] != "--" {
		fmt.Fprintln(os.Stderr, "warren: exec guard: want -- command [args]")
		return exitGuardFailed
	}
	argv := args[1:]
	// Non-blocking, so that the file is pollable and closing it ends a
	// read in progress. The command needs no part of the lifeline.
	if err := syscall.SetNonblock(lifelineFD, true); err != nil {
		fmt.Fprintf(os.Stderr, "warren: exec guard: no lifeline: %v\n", err)
		return exitGuardFailed
	}
	syscall.CloseOnExec(lifelineFD)
	lifeline := os.NewFile(lifelineFD, "lifeline")
	guardSetup()

	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "warren: exec guard: %v\n", err)
		return exitGuardFailed
	}
	// Signals that would end the guard are turned into the same kill as a
	// closed lifeline: the command must not outlive the guard.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   handlerAttr(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "warren: exec guard: starting %s: %v\n", argv[0], err)
		return exitGuardFailed
	}
	g := &guard{pid: proc.Pid}
	done := make(chan struct{})
	var watchers sync.WaitGroup
	watchers.Add(2)
	go func() {
		defer watchers.Done()
		_, _ = io.Copy(io.Discard, lifeline) // returns at end of file
		g.kill()
	}()
	go func() {
		defer watchers.Done()
		select {
		case <-sigs:
			g.kill()
		case <-done:
		}
	}()

	state, err := g.finish(proc)
	killDescendants()
	close(done)
	// The lifeline watcher ends when the worker closes the pipe, which it
	// does once the guard has exited; closing the read end here ends it now.
	_ = lifeline.Close()
	watchers.Wait()
	if err != nil {
		fmt.Fprintf(os.Stderr, "warren: exec guard: waiting for %s: %v\n", argv[0], err)
		return exitGuardFailed
	}
	return exitCodeOf(state)
}

// guard kills the command's process group until the command is reaped:
// its process ID names the group, and it may be reused once reaped.
type guard struct {
	mu     sync.Mutex
	pid    int
	reaped bool
}

func (g *guard) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.reaped {
		_ = syscall.Kill(-g.pid, syscall.SIGKILL)
	}
}

// finish waits for the command to exit and kills what it left running
// in its process group.
func (g *guard) finish(proc *os.Process) (*os.ProcessState, error) {
	if waitExited(g.pid) {
		// Exited but not reaped: the group's ID is still ours.
		g.kill()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.reaped = true
		return proc.Wait()
	}
	state, err := proc.Wait()
	// Without waitid(WNOWAIT) the ID is free between the reap and this
	// kill: a new process group with the same ID in that instant would be
	// hit. Only where the OS offers nothing better.
	g.kill()
	g.mu.Lock()
	g.reaped = true
	g.mu.Unlock()
	return state, err
}

// exitCodeOf is the command's exit code, or 128 + the signal that
// killed it, as a shell reports it.
func exitCodeOf(state *os.ProcessState) int {
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return state.ExitCode()
}

// lifeline is the worker's end of a guard's lifeline pipe.
type lifeline struct {
	r, w *os.File
	once sync.Once
}

func newLifeline() (*lifeline, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec guard lifeline: %w", err)
	}
	return &lifeline{r: r, w: w}, nil
}

// cut closes the write end: the guard kills the command's group. Safe to
// call more than once and from several goroutines.
func (l *lifeline) cut() error {
	var err error
	l.once.Do(func() { err = l.w.Close() })
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
