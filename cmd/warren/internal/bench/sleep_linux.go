package bench

import (
	"syscall"
	"time"
)

const haveBlockingSleep = true

// blockingSleep waits d in a nanosleep system call, which holds its
// thread as a handler blocked in a system call or a C library would, and
// is as exact as the kernel's timers rather than the Go runtime's.
func blockingSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
