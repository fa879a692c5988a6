package broker

import "sync"

// subscription is what a consumer's reader wants: paused or not, and the
// prefetch of the next subscription. Every change closes and replaces
// changed, so the consumer's loops wake up.
type subscription struct {
	mu       sync.Mutex
	paused   bool
	prefetch int
	changed  chan struct{}
}

func (s *subscription) get() (paused bool, prefetch int, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused, s.prefetch, s.changed
}

func (s *subscription) set(paused bool, prefetch int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == paused && s.prefetch == prefetch {
		return
	}
	s.paused, s.prefetch = paused, prefetch
	close(s.changed)
	s.changed = make(chan struct{})
}

// Pause cancels the subscription and leaves it cancelled until Resume:
// the queue's messages stay there. Deliveries the broker sent after the
// cancel, and those not yet handed out, go back to the queue; those
// handed out can still be settled. Pause does not wait.
func (cn *Consumer) Pause() {
	_, prefetch, _ := cn.sub.get()
	cn.sub.set(true, prefetch)
}

// Resume subscribes again with the given prefetch (0 means the
// configured one). Called while subscribed with another prefetch, it
// cancels the subscription and subscribes again with the new one (a
// per-consumer prefetch applies from basic.consume on). Resume does not
// wait.
func (cn *Consumer) Resume(prefetch int) {
	if prefetch <= 0 {
		prefetch = cn.cfg.Prefetch
	}
	cn.sub.set(false, prefetch)
}

// Paused reports whether Pause was called last.
func (cn *Consumer) Paused() bool {
	p, _, _ := cn.sub.get()
	return p
}

// changed follows a subscription cancelled for a Pause or a new
// prefetch; the handed-out deliveries settle on the retiring channel.
func (cn *Consumer) changed() {
	if cn.Paused() {
		cn.requeueBuffered()
		cn.log.Info("consumer paused")
	}
}

// waitResume waits until the consumer is resumed (true) or stopped.
func (cn *Consumer) waitResume() bool {
	for {
		paused, _, changed := cn.sub.get()
		if !paused {
			return true
		}
		select {
		case <-changed:
		case <-cn.stop:
			return false
		}
	}
}
