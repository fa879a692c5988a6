//go:build linux

package main

import "testing"

// TestE2EKilledWorkerHandsOverBacklog is the kill test with a backlog:
// the survivor runs 3 handlers of 3s and 12 messages wait in the queue
// at the kill. The broker puts the killed worker's messages back at the
// head of the queue, and the survivor takes them as soon as it has room
// in its prefetch window. Their claims are still leased to the dead
// worker then: they are parked (no handler held) until the lease runs
// out, and run then, instead of going round the first tier to the back
// of the queue, behind the backlog (which took 14 to 17 s before).
func TestE2EKilledWorkerHandsOverBacklog(t *testing.T) {
	t.Parallel()
	killAndHandOver(t, 3, 12)
}
