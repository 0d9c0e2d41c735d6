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

// Store reads and writes one kind of file.
type Store[T any] struct {
	kv   jetstream.KeyValue
	kind Kind[T]
}

// Open opens (or creates) the kind's bucket.
func Open[T any](ctx context.Context, bus *natsjs.Bus, kind Kind[T]) (*Store[T], error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{Bucket: kind.Bucket, Description: kind.Description, History: 16})
	if err != nil {
		return nil, err
	}
	return &Store[T]{kv: kv, kind: kind}, nil
}

// Get returns the tenant's file in force: the default until one is put.
func (s *Store[T]) Get(ctx context.Context, tenant string) (Stored[T], error) {
	st, _, err := s.get(ctx, tenant)
	return st, err
}

func (s *Store[T]) get(ctx context.Context, tenant string) (Stored[T], uint64, error) {
	e, err := s.kv.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Stored[T]{Source: s.kind.Template, Spec: s.kind.Default}, 0, nil
	}
	if err != nil {
		return Stored[T]{}, 0, fmt.Errorf("read the %s: %w", s.kind.What, err)
	}
	var st Stored[T]
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Stored[T]{}, 0, fmt.Errorf("read the %s: %w", s.kind.What, err)
	}
	if st.Spec, err = s.kind.Parse([]byte(st.Source)); err != nil {
		return Stored[T]{}, 0, fmt.Errorf("the stored %s no longer parses: %w", s.kind.What, err)
	}
	return st, e.Revision(), nil
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
		if rev == 0 {
			_, err = s.kv.Create(ctx, tenant, b)
		} else {
			_, err = s.kv.Update(ctx, tenant, b, rev)
		}
		if err == nil {
			return next, false, nil
		}
		if !natsjs.CASConflict(err) {
			return Stored[T]{}, false, fmt.Errorf("store the %s: %w", s.kind.What, err)
		}
	}
	return Stored[T]{}, false, fmt.Errorf("store the %s: too many concurrent puts; try again", s.kind.What)
}
