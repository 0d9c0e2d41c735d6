package service

import "sync"

// Pending is work asked for by key (a tenant's backfill or rescore),
// merged while it waits: asking again for a key that waits replaces its
// reason. A runner waits on Wake and takes the work with Next.
type Pending struct {
	mu   sync.Mutex
	work map[string]string
	wake chan struct{}
}

// NewPending returns an empty queue.
func NewPending() *Pending {
	return &Pending{work: map[string]string{}, wake: make(chan struct{}, 1)}
}

// Add asks for the work of key, for reason.
func (p *Pending) Add(key, reason string) {
	p.mu.Lock()
	p.work[key] = reason
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Wake receives after Add.
func (p *Pending) Wake() <-chan struct{} { return p.wake }

// Next takes one waiting key and its reason; ok is false when none waits.
func (p *Pending) Next() (key, reason string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, r := range p.work {
		delete(p.work, k)
		return k, r, true
	}
	return "", "", false
}
