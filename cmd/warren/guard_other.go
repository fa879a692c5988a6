//go:build !linux

package main

import (
	"os"
	"syscall"
)

// selfExe is the path of the running binary.
func selfExe() (string, error) { return os.Executable() }

// guardSetup has nothing to do where there is no parent-death signal and
// no child subreaper.
func guardSetup() {}

// handlerAttr puts the command in a new process group.
func handlerAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// waitExited cannot wait without reaping here: the caller reaps.
func waitExited(int) bool { return false }

// killDescendants cannot find descendants that left the command's
// process group here.
func killDescendants() {}
