package signals

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
)

// Memory keeps emitted signals in memory instead of the signals table: a
// backtest's, whose thousands of steps would each cost an insert. Like
// the table, it keeps one signal per id.
//
// It keeps each signal as published, with its kind and time beside it
// for First: a million-event backtest emits hundreds of thousands, and
// as messages they were 400 MB of its heap, which the garbage collector
// went through at every cycle; as bytes it has nothing to go through.
type Memory struct {
	mu        sync.RWMutex
	ids       map[string]bool
	byAccount map[string][]kept // by tenant and account, in the order emitted
}

// kept is a signal as Memory keeps it.
type kept struct {
	kind string
	at   int64 // occurred_at, in Unix nanoseconds
	data []byte
}

func (k kept) signal() (*signalsv1.Signal, error) {
	s := &signalsv1.Signal{}
	if err := proto.Unmarshal(k.data, s); err != nil {
		return nil, fmt.Errorf("a kept signal: %w", err)
	}
	return s, nil
}

// NewMemory returns an empty record.
func NewMemory() *Memory {
	return &Memory{ids: map[string]bool{}, byAccount: map[string][]kept{}}
}

// add keeps sigs, each with its message as published.
func (m *Memory) add(sigs []*signalsv1.Signal, published [][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range sigs {
		if m.ids[s.GetId()] {
			continue
		}
		m.ids[s.GetId()] = true
		k := s.GetTenantId() + "\x00" + s.GetAccountId()
		m.byAccount[k] = append(m.byAccount[k], kept{kind: s.GetKind(), at: s.GetOccurredAt().AsTime().UnixNano(), data: published[i]})
	}
}

// First is the account's earliest signal of one of kinds that occurred
// at or before t, or nil.
func (m *Memory) First(tenant, account string, kinds []string, t time.Time) (*signalsv1.Signal, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var first *kept
	limit := t.UnixNano()
	sigs := m.byAccount[tenant+"\x00"+account]
	for i, k := range sigs {
		if slices.Contains(kinds, k.kind) && k.at <= limit && (first == nil || k.at < first.at) {
			first = &sigs[i]
		}
	}
	if first == nil {
		return nil, nil
	}
	return first.signal()
}

// Signals are the tenant's signals recorded, by account, in the order
// emitted.
func (m *Memory) Signals(tenant string) ([]*signalsv1.Signal, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*signalsv1.Signal
	for k, sigs := range m.byAccount {
		if !strings.HasPrefix(k, tenant+"\x00") {
			continue
		}
		for _, s := range sigs {
			sig, err := s.signal()
			if err != nil {
				return nil, err
			}
			out = append(out, sig)
		}
	}
	return out, nil
}

// Save records every signal kept in the signals table of db: a backtest
// whose data folder is kept.
func (m *Memory) Save(ctx context.Context, db chstore.Store) error {
	m.mu.RLock()
	var all []kept
	for _, sigs := range m.byAccount {
		all = append(all, sigs...)
	}
	m.mu.RUnlock()
	for chunk := range slices.Chunk(all, 50_000) {
		sigs, published := make([]*signalsv1.Signal, len(chunk)), make([][]byte, len(chunk))
		for i, k := range chunk {
			s, err := k.signal()
			if err != nil {
				return err
			}
			sigs[i], published[i] = s, k.data
		}
		if err := record(ctx, db, sigs, published); err != nil {
			return err
		}
	}
	return nil
}

// UseMemory makes the emitter record signals in m instead of the signals
// table, and read the traits of signals without an account snapshot from
// h instead of account_traits: a backtest's. It still publishes them.
func (e *Emitter) UseMemory(m *Memory, h *accounts.History) {
	e.memory, e.history = m, h
}
