package signals

import (
	"context"
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
type Memory struct {
	mu        sync.RWMutex
	ids       map[string]bool
	byAccount map[string][]*signalsv1.Signal // by tenant and account, in the order emitted
}

// NewMemory returns an empty record.
func NewMemory() *Memory {
	return &Memory{ids: map[string]bool{}, byAccount: map[string][]*signalsv1.Signal{}}
}

func (m *Memory) add(sigs []*signalsv1.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range sigs {
		if m.ids[s.GetId()] {
			continue
		}
		m.ids[s.GetId()] = true
		k := s.GetTenantId() + "\x00" + s.GetAccountId()
		m.byAccount[k] = append(m.byAccount[k], s)
	}
}

// First is the account's earliest signal of one of kinds that occurred
// at or before t, or nil.
func (m *Memory) First(tenant, account string, kinds []string, t time.Time) *signalsv1.Signal {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out *signalsv1.Signal
	for _, s := range m.byAccount[tenant+"\x00"+account] {
		at := s.GetOccurredAt().AsTime()
		if slices.Contains(kinds, s.GetKind()) && !at.After(t) && (out == nil || at.Before(out.GetOccurredAt().AsTime())) {
			out = s
		}
	}
	return out
}

// Signals are the tenant's signals recorded, by account, in the order
// emitted.
func (m *Memory) Signals(tenant string) []*signalsv1.Signal {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*signalsv1.Signal
	for k, sigs := range m.byAccount {
		if strings.HasPrefix(k, tenant+"\x00") {
			out = append(out, sigs...)
		}
	}
	return out
}

// Save records every signal kept in the signals table of db: a backtest
// whose data folder is kept.
func (m *Memory) Save(ctx context.Context, db chstore.Store) error {
	m.mu.RLock()
	var all []*signalsv1.Signal
	for _, sigs := range m.byAccount {
		all = append(all, sigs...)
	}
	m.mu.RUnlock()
	for chunk := range slices.Chunk(all, 50_000) {
		published := make([][]byte, len(chunk))
		for i, s := range chunk {
			data, err := proto.Marshal(s)
			if err != nil {
				return err
			}
			published[i] = data
		}
		if err := record(ctx, db, chunk, published); err != nil {
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
