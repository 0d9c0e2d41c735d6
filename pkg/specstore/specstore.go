// Package specstore keeps a file a tenant writes (a health model, an
// alerting configuration), versioned and durable, in a JetStream key-value
// bucket: key <tenant>, value the file as put, its version and time. Every
// replica reads the same bucket; puts are compare-and-set, so two puts at
// once get two versions.
package specstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
)

// Stored is a file as put, with its version; version 0 is the default.
type Stored[T any] struct {
	Version   int64     `json:"version"`
	Source    string    `json:"source"`
	UpdatedAt time.Time `json:"updated_at"`
	// Spec is Source parsed.
	Spec T `json:"-"`
}

// Kind describes one kind of file.
type Kind[T any] struct {
	// Bucket names the key-value bucket; What names the file in errors
	// ("health model").
	Bucket, What, Description string
	// Parse checks a whole file.
	Parse func(src []byte) (T, error)
	// Template is the source in force until a tenant puts one; Default is
	// it parsed.
	Template string
	Default  T
	// Prepare, when set, turns the source put into the source stored,
	// knowing the one in force (to keep secrets a file leaves redacted).
	Prepare func(current Stored[T], src []byte) ([]byte, error)
}

// Store reads and writes one kind of file. It holds every tenant's file
// in memory, kept current by a watch of the bucket, as the tenancy
// registry does: Get is on hot paths (every accounts API Get, every
// scoring round), where a KV read is a round trip to a busy NATS server.
// A put applies here at once, and on other replicas when their watch
// delivers it.
type Store[T any] struct {
	kv   jetstream.KeyValue
	kind Kind[T]

	mu   sync.RWMutex
	held map[string]heldFile // by tenant
	// live: the watch delivered the bucket's files and runs, so held is
	// current; else Get reads KV.
	live atomic.Bool
}

// heldFile is a tenant's file as stored (its Spec is parsed on each Get,
// so no caller shares another's), at its KV revision.
type heldFile struct {
	value   []byte
	rev     uint64
	deleted bool
}

// Open opens (or creates) the kind's bucket and loads its files.
func Open[T any](ctx context.Context, bus *natsjs.Bus, kind Kind[T]) (*Store[T], error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: kind.Bucket, Description: kind.Description, History: 16})
	if err != nil {
		return nil, err
	}
	s := &Store[T]{kv: kv, kind: kind, held: map[string]heldFile{}}
	// The watch outlives Open's ctx: it ends with the connection.
	w, err := kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("watch the %s bucket: %w", kind.What, err)
	}
	loaded := make(chan struct{})
	go s.watch(w, loaded)
	select {
	case <-loaded:
	case <-ctx.Done():
		_ = w.Stop()
		return nil, fmt.Errorf("load the %s bucket: %w", kind.What, ctx.Err())
	}
	return s, nil
}

func (s *Store[T]) watch(w jetstream.KeyWatcher, loaded chan struct{}) {
	signalled := false
	for e := range w.Updates() {
		if e == nil { // the end of the files stored so far
			if !signalled {
				s.live.Store(true)
				close(loaded)
				signalled = true
			}
			continue
		}
		s.apply(e.Key(), e.Revision(), e.Value(), e.Operation() != jetstream.KeyValuePut)
	}
	s.live.Store(false)
	if !signalled {
		close(loaded)
	}
}

// apply holds a tenant's file unless a newer revision of it is held.
func (s *Store[T]) apply(tenant string, rev uint64, value []byte, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.held[tenant].rev {
		s.held[tenant] = heldFile{value: value, rev: rev, deleted: deleted}
	}
}

// Get returns the tenant's file in force: the default until one is put.
func (s *Store[T]) Get(ctx context.Context, tenant string) (Stored[T], error) {
	if !s.live.Load() {
		st, _, err := s.get(ctx, tenant)
		return st, err
	}
	s.mu.RLock()
	h, ok := s.held[tenant]
	s.mu.RUnlock()
	if !ok || h.deleted {
		return s.defaults(), nil
	}
	return s.decode(h.value)
}

// Await waits until Get gives tenant's spec at version or later. Get reads
// what the store's watcher holds, which follows a Put a moment later: a
// caller that acts on its own Put at once (a backtest's first step, a
// millisecond after it puts its files) waits for it first.
func (s *Store[T]) Await(ctx context.Context, tenant string, version int64) error {
	for {
		st, err := s.Get(ctx, tenant)
		if err != nil {
			return err
		}
		if st.Version >= version {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (s *Store[T]) defaults() Stored[T] {
	return Stored[T]{Source: s.kind.Template, Spec: s.kind.Default}
}

// decode reads a stored value and parses its source.
func (s *Store[T]) decode(value []byte) (Stored[T], error) {
	var st Stored[T]
	if err := json.Unmarshal(value, &st); err != nil {
		return Stored[T]{}, fmt.Errorf("read the %s: %w", s.kind.What, err)
	}
	var err error
	if st.Spec, err = s.kind.Parse([]byte(st.Source)); err != nil {
		return Stored[T]{}, fmt.Errorf("the stored %s no longer parses: %w", s.kind.What, err)
	}
	return st, nil
}

// get reads the tenant's file and its revision from KV: what a put
// compares and sets against.
func (s *Store[T]) get(ctx context.Context, tenant string) (Stored[T], uint64, error) {
	e, err := s.kv.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s.defaults(), 0, nil
	}
	if err != nil {
		return Stored[T]{}, 0, fmt.Errorf("read the %s: %w", s.kind.What, err)
	}
	st, err := s.decode(e.Value())
	return st, e.Revision(), err
}

// Put checks source and makes it the tenant's file, one version on.
// unchanged reports a source equal to the one in force (nothing stored).
func (s *Store[T]) Put(ctx context.Context, tenant string, source []byte) (st Stored[T], unchanged bool, _ error) {
	for range 5 {
		cur, rev, err := s.get(ctx, tenant)
		if err != nil {
			return Stored[T]{}, false, err
		}
		src := source
		if s.kind.Prepare != nil {
			if src, err = s.kind.Prepare(cur, source); err != nil {
				return Stored[T]{}, false, err
			}
		}
		spec, err := s.kind.Parse(src)
		if err != nil {
			return Stored[T]{}, false, err
		}
		if cur.Version > 0 && cur.Source == string(src) {
			return cur, true, nil
		}
		next := Stored[T]{Version: cur.Version + 1, Source: string(src), UpdatedAt: time.Now().UTC(), Spec: spec}
		b, _ := json.Marshal(next)
		var newRev uint64
		if rev == 0 {
			newRev, err = s.kv.Create(ctx, tenant, b)
		} else {
			newRev, err = s.kv.Update(ctx, tenant, b, rev)
		}
		if err == nil {
			s.apply(tenant, newRev, b, false) // read your writes here at once
			return next, false, nil
		}
		if !natsjs.CASConflict(err) {
			return Stored[T]{}, false, fmt.Errorf("store the %s: %w", s.kind.What, err)
		}
	}
	return Stored[T]{}, false, fmt.Errorf("store the %s: too many concurrent puts; try again", s.kind.What)
}
