// Package models keeps each tenant's health model, versioned and durable,
// in a JetStream key-value bucket: key <tenant>, value the file as put and
// its version. Every replica reads the same bucket.
package models

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
)

// Bucket is the key-value bucket of models.
const Bucket = "health_models"

// Stored is a model as put, with its version; version 0 is the default.
type Stored struct {
	Version   int64     `json:"version"`
	Source    string    `json:"source"`
	UpdatedAt time.Time `json:"updated_at"`
	// Model is Source parsed.
	Model model.Model `json:"-"`
}

// Store reads and writes models.
type Store struct{ kv jetstream.KeyValue }

// Open opens (or creates) the bucket.
func Open(ctx context.Context, bus *natsjs.Bus) (*Store, error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Stickpoint health models: each tenant's scoring model, as put, with its last versions.",
		History:     16,
	})
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv}, nil
}

// Get returns the tenant's model in force: the default until one is put.
func (s *Store) Get(ctx context.Context, tenant string) (Stored, error) {
	st, _, err := s.get(ctx, tenant)
	return st, err
}

func (s *Store) get(ctx context.Context, tenant string) (Stored, uint64, error) {
	e, err := s.kv.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Stored{Source: model.Template, Model: model.Default()}, 0, nil
	}
	if err != nil {
		return Stored{}, 0, fmt.Errorf("read the health model: %w", err)
	}
	var st Stored
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Stored{}, 0, fmt.Errorf("read the health model: %w", err)
	}
	if st.Model, err = model.Parse([]byte(st.Source)); err != nil {
		return Stored{}, 0, fmt.Errorf("the stored health model no longer parses: %w", err)
	}
	return st, e.Revision(), nil
}

// Put checks source and makes it the tenant's model, one version on.
// unchanged reports a source equal to the one in force (nothing stored).
func (s *Store) Put(ctx context.Context, tenant string, source []byte) (st Stored, unchanged bool, _ error) {
	m, err := model.Parse(source)
	if err != nil {
		return Stored{}, false, err
	}
	for range 5 { // compare-and-set: two puts at once get two versions
		cur, rev, err := s.get(ctx, tenant)
		if err != nil {
			return Stored{}, false, err
		}
		if cur.Version > 0 && cur.Source == string(source) {
			return cur, true, nil
		}
		next := Stored{Version: cur.Version + 1, Source: string(source), UpdatedAt: time.Now().UTC(), Model: m}
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
			return Stored{}, false, fmt.Errorf("store the health model: %w", err)
		}
	}
	return Stored{}, false, errors.New("store the health model: too many concurrent puts; try again")
}
