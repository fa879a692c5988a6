//go:build !unix

package bench

import "time"

// processCPU is not known here: rounds print no client CPU.
func processCPU() time.Duration { return 0 }
