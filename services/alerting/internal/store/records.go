package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
)

// records is where alert records are kept, by key, each with a revision
// that a write must name: the key-value bucket, or memory in a backtest.
type records interface {
	// get returns a key's value and revision; nil and 0 when there is none.
	get(ctx context.Context, key string) ([]byte, uint64, error)
	// put stores a value at revision rev, or creates the key when rev is 0.
	// It returns errConflict when the key has moved on since.
	put(ctx context.Context, key string, value []byte, rev uint64) error
	// each calls f with every value whose key starts with prefix ("" for
	// every key).
	each(ctx context.Context, prefix string, f func([]byte) error) error
}

// errConflict is a write that lost a race: the key changed since it was read.
var errConflict = errors.New("the alert changed since it was read")

// bucket keeps the records in the JetStream key-value bucket.
type bucket struct{ kv jetstream.KeyValue }

func (b bucket) get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

func (b bucket) put(ctx context.Context, key string, value []byte, rev uint64) error {
	var err error
	if rev == 0 {
		_, err = b.kv.Create(ctx, key, value)
	} else {
		_, err = b.kv.Update(ctx, key, value, rev)
	}
	if natsjs.CASConflict(err) || errors.Is(err, jetstream.ErrKeyExists) {
		return errConflict
	}
	return err
}

func (b bucket) each(ctx context.Context, prefix string, f func([]byte) error) error {
	filter := ">"
	if prefix != "" {
		filter = prefix + ">"
	}
	w, err := b.kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-w.Updates():
			if e == nil { // every current value has been sent
				return nil
			}
			if err := f(e.Value()); err != nil {
				return err
			}
		}
	}
}

// memory keeps the records in memory: a backtest's alerts, which it
// reads and changes a few times for every signal. In the bucket each of
// those is a round trip to the server, and they were a quarter of a
// backtest's time.
type memory struct {
	mu     sync.Mutex
	values map[string][]byte
	revs   map[string]uint64
	last   uint64 // the last revision given, as the bucket's stream sequence
}

func newMemory() *memory {
	return &memory{values: map[string][]byte{}, revs: map[string]uint64{}}
}

func (m *memory) get(_ context.Context, key string) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.values[key], m.revs[key], nil
}

func (m *memory) put(_ context.Context, key string, value []byte, rev uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.revs[key] != rev {
		return errConflict
	}
	m.last++
	m.values[key], m.revs[key] = slices.Clone(value), m.last
	return nil
}

// each goes through the keys in their order, so that a backtest's sweep
// meets the alerts in the same order at every run.
func (m *memory) each(ctx context.Context, prefix string, f func([]byte) error) error {
	_, values := m.sorted(prefix)
	for _, v := range values {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}

// sorted is the keys that start with prefix, in their order, and their values.
func (m *memory) sorted(prefix string) (keys []string, values [][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.values {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	values = make([][]byte, len(keys))
	for i, k := range keys {
		values[i] = m.values[k]
	}
	return keys, values
}

// save writes every record to the bucket, in key order.
func (m *memory) save(ctx context.Context, kv jetstream.KeyValue) error {
	keys, values := m.sorted("")
	for i, k := range keys {
		if _, err := kv.Put(ctx, k, values[i]); err != nil {
			return fmt.Errorf("save alert %s: %w", k, err)
		}
	}
	return nil
}
