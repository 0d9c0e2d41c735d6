// Package journeys keeps each tenant's journeys, versioned and durable, in
// a JetStream key-value bucket: key <tenant>.<journey id>, value the file
// as it was put and its version. Every replica reads the same bucket.
package journeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
)

// Bucket is the key-value bucket of journeys.
const Bucket = "journeys"

// MaxPerTenant bounds a tenant's journeys.
const MaxPerTenant = 32

// ErrNotFound is returned for a journey that doesn't exist.
var ErrNotFound = errors.New("journey not found")

// ErrTooMany is returned for a new journey past MaxPerTenant.
var ErrTooMany = fmt.Errorf("a tenant has at most %d journeys; delete one first", MaxPerTenant)

// Stored is a journey as put, with its version.
type Stored struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
	Source  string `json:"source"`
	// CreatedAt is the first version's time: accounts try journeys in
	// this order.
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Journey is Source parsed (not stored: the source is the truth).
	Journey journey.Journey `json:"-"`
}

// Store reads and writes journeys, and the progress of the recompute a
// change starts.
type Store struct {
	kv jetstream.KeyValue
	// stream is the bucket's stream: its subjects list the keys (see ids).
	stream    jetstream.Stream
	backfills jetstream.KeyValue
	now       func() time.Time
}

// BackfillBucket keeps each tenant's latest backfill, so any replica can
// report the one another runs.
const BackfillBucket = "journey_backfills"

// Open opens (or creates) the bucket.
func Open(ctx context.Context, bus *natsjs.Bus) (*Store, error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Stickpoint journeys: each tenant's milestones, as put, with their last versions.",
		History:     16,
	})
	if err != nil {
		return nil, err
	}
	bf, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BackfillBucket,
		Description: "Each tenant's latest recompute of its accounts after a journey change.",
		History:     1,
	})
	if err != nil {
		return nil, err
	}
	stream, err := bus.JS.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return nil, err
	}
	return &Store{kv: kv, stream: stream, backfills: bf, now: time.Now}, nil
}

// Backfill is a recompute of a tenant's accounts after its journeys
// changed.
type Backfill struct {
	Reason     string    `json:"reason"`
	Total      int64     `json:"total"`
	Done       int64     `json:"done"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Finished   bool      `json:"finished"`
	Err        string    `json:"error,omitempty"`
}

// PutBackfill records a tenant's backfill progress.
func (s *Store) PutBackfill(ctx context.Context, tenant string, b Backfill) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if _, err := s.backfills.Put(ctx, tenant, data); err != nil {
		return fmt.Errorf("record backfill: %w", err)
	}
	return nil
}

// Backfill is the tenant's latest backfill; ok is false when none ran.
func (s *Store) Backfill(ctx context.Context, tenant string) (b Backfill, ok bool, _ error) {
	e, err := s.backfills.Get(ctx, tenant)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Backfill{}, false, nil
	}
	if err != nil {
		return Backfill{}, false, fmt.Errorf("read backfill: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		return Backfill{}, false, fmt.Errorf("backfill record: %w", err)
	}
	return b, true, nil
}

func key(tenant, id string) string { return tenant + "." + id }

// Put stores a journey file as the next version of its id. A source equal
// to the current version's is not stored again (unchanged true). It
// refuses a file that doesn't parse, and a tenant's journey past
// MaxPerTenant.
func (s *Store) Put(ctx context.Context, tenant string, source []byte) (st Stored, unchanged bool, _ error) {
	j, err := journey.Parse(source)
	if err != nil {
		return Stored{}, false, err
	}
	for attempt := 0; attempt < 5; attempt++ {
		cur, rev, err := s.get(ctx, tenant, j.ID)
		switch {
		case errors.Is(err, ErrNotFound):
			held, err := s.List(ctx, tenant)
			if err != nil {
				return Stored{}, false, err
			}
			if len(held) >= MaxPerTenant {
				return Stored{}, false, ErrTooMany
			}
			now := s.now().UTC()
			st = Stored{ID: j.ID, Version: 1, Source: string(source), CreatedAt: now, UpdatedAt: now, Journey: j}
		case err != nil:
			return Stored{}, false, err
		case cur.Source == string(source):
			return cur, true, nil
		default:
			st = Stored{ID: j.ID, Version: cur.Version + 1, Source: string(source), CreatedAt: cur.CreatedAt, UpdatedAt: s.now().UTC(), Journey: j}
		}
		data, err := json.Marshal(st)
		if err != nil {
			return Stored{}, false, err
		}
		// Compare-and-set on the revision read, so two puts at once
		// can't both become the same version.
		if rev == 0 {
			_, err = s.kv.Create(ctx, key(tenant, j.ID), data)
		} else {
			_, err = s.kv.Update(ctx, key(tenant, j.ID), data, rev)
		}
		if err == nil {
			return st, false, nil
		}
		if !natsjs.CASConflict(err) {
			return Stored{}, false, fmt.Errorf("store journey %s: %w", j.ID, err)
		}
	}
	return Stored{}, false, fmt.Errorf("store journey %s: changed by another writer too often; try again", j.ID)
}

// Get returns a tenant's journey.
func (s *Store) Get(ctx context.Context, tenant, id string) (Stored, error) {
	st, _, err := s.get(ctx, tenant, id)
	return st, err
}

func (s *Store) get(ctx context.Context, tenant, id string) (Stored, uint64, error) {
	if !specfile.ValidID(id) {
		return Stored{}, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, key(tenant, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Stored{}, 0, ErrNotFound
	}
	if err != nil {
		return Stored{}, 0, fmt.Errorf("read journey %s: %w", id, err)
	}
	var st Stored
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Stored{}, 0, fmt.Errorf("journey %s: %w", id, err)
	}
	if st.Journey, err = journey.Parse([]byte(st.Source)); err != nil {
		return Stored{}, 0, fmt.Errorf("journey %s version %d no longer parses: %w", id, st.Version, err)
	}
	return st, e.Revision(), nil
}

// List returns a tenant's journeys in the order accounts try them: the
// oldest first.
func (s *Store) List(ctx context.Context, tenant string) ([]Stored, error) {
	ids, err := s.ids(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]Stored, 0, len(ids))
	for _, id := range ids {
		st, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Stored) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (s *Store) ids(ctx context.Context, tenant string) ([]string, error) {
	// The stream's subjects, from the server's own count, not a key
	// lister: a lister's end-of-keys marker can come before the keys
	// (nats-server#4824), and an evaluation that saw no journey would
	// drop every account's onboarding. Deleted keys are listed too; List
	// skips them.
	prefix := "$KV." + Bucket + "." + tenant + "."
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(prefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("list journeys: %w", err)
	}
	ids := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		ids = append(ids, strings.TrimPrefix(subject, prefix))
	}
	return ids, nil
}

// Delete deletes a journey; its accounts follow the next journey that
// applies, if any.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	if _, err := s.Get(ctx, tenant, id); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, key(tenant, id)); err != nil {
		return fmt.Errorf("delete journey %s: %w", id, err)
	}
	return nil
}
