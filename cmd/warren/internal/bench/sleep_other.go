//go:build !linux

package bench

import "time"

const haveBlockingSleep = false

func blockingSleep(d time.Duration) { time.Sleep(d) }
