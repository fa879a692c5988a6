package main

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// descendantsWait bounds how long the guard keeps killing processes
// re-parented to it before it exits anyway (a process stuck in the kernel
// can take a while to die).
const descendantsWait = 5 * time.Second

// selfExe runs the binary that is running, even if its file was replaced
// or removed since (an upgrade in place).
func selfExe() (string, error) { return "/proc/self/exe", nil }

// guardSetup locks the guard's main goroutine to its thread for good: the
// command's parent-death signal follows the thread that forked it, and
// this one ends only with the guard. Then the guard becomes a child
// subreaper, so that orphaned descendants of the command come to it.
func guardSetup() {
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// handlerAttr puts the command in a new process group and kills it when
// the guard dies.
func handlerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExited waits until pid has exited without reaping it, and reports
// true; false if it cannot.
func waitExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return err == nil
		}
	}
}

// killDescendants kills the processes re-parented to the guard (the
// descendants of the command that left its process group), and those
// re-parented when these die, until the guard has no child left.
func killDescendants() {
	deadline := time.Now().Add(descendantsWait)
	self := os.Getpid()
	for {
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if errors.Is(err, syscall.ECHILD) {
				return // the usual case at once: no child left
			}
			if err != nil || pid <= 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return
		}
		for _, pid := range childrenOf(self) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childrenOf lists the processes whose parent is ppid, from /proc.
func childrenOf(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := parentOf(pid); ok && p == ppid {
			kids = append(kids, pid)
		}
	}
	return kids
}

// parentOf reads the parent's ID from /proc/<pid>/stat: "pid (comm)
// state ppid ...", where comm may hold spaces and parentheses.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	p, err := strconv.Atoi(f[1])
	return p, err == nil
}
