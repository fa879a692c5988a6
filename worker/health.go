package worker

import "sync/atomic"

// health tracks what readiness depends on.
type health struct {
	running   atomic.Bool
	storeUsed atomic.Bool
	storeDown atomic.Bool
	conns     atomic.Pointer[[]func() bool]
}

func (h *health) setRunning(v bool) { h.running.Store(v) }
func (h *health) setStoreUsed()     { h.storeUsed.Store(true) }

// storeResult records whether the last store call found it unavailable.
func (h *health) storeResult(down bool) { h.storeDown.Store(down) }

func (h *health) setConns(checks ...func() bool) { h.conns.Store(&checks) }

func (h *health) ready() bool {
	if !h.running.Load() {
		return false
	}
	if h.storeUsed.Load() && h.storeDown.Load() {
		return false
	}
	if cs := h.conns.Load(); cs != nil {
		for _, c := range *cs {
			if !c() {
				return false
			}
		}
	}
	return true
}
