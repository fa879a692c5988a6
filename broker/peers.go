package broker

import "sync"

// Conns of one process that dial the same addresses are peers: when one
// of them reaches the broker, the others that wait out a backoff try again
// at once, at the address that answered. A worker's consumer and publisher
// connections thus come back together after a broker restart, instead of
// the publisher staying down for the rest of its grown backoff while
// handlers wait on it.
var peers = peerRegistry{groups: map[string]map[*Conn]struct{}{}}

type peerRegistry struct {
	mu     sync.Mutex
	groups map[string]map[*Conn]struct{} // by Config.URL
}

func (r *peerRegistry) join(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.groups[c.cfg.URL]
	if g == nil {
		g = map[*Conn]struct{}{}
		r.groups[c.cfg.URL] = g
	}
	g[c] = struct{}{}
}

func (r *peerRegistry) leave(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.groups[c.cfg.URL]
	delete(g, c)
	if len(g) == 0 {
		delete(r.groups, c.cfg.URL)
	}
}

// reached tells c's peers that address idx answered. It never blocks: a
// peer that has a hint pending keeps that one.
func (r *peerRegistry) reached(c *Conn, idx int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.groups[c.cfg.URL] {
		if p == c {
			continue
		}
		select {
		case p.reachable <- idx:
		default:
		}
	}
}
