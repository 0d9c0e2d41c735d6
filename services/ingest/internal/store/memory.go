package store

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/services/ingest/internal/dedup"
)

// Memory is the writer's store in memory: a backtest's, whose thousands
// of steps would each cost an insert. It keeps what the writer reads back
// (the messageIds stored, and the users' ties to accounts from identify
// and group calls, as the users table keeps them); the events themselves
// go to the writer's Stored hook (accounts.History).
type Memory struct {
	// Keep keeps every event written, for Saved.
	Keep bool

	mu      sync.RWMutex
	kept    []events.Event
	ids     map[string]time.Time    // claim times, by tenant and messageId
	members map[string][]Membership // by tenant and user
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{ids: map[string]time.Time{}, members: map[string][]Membership{}}
}

func memKey(tenant, id string) string { return tenant + "\x00" + id }

// Write keeps the events' messageIds and the ties the calls record, as
// Store.Write inserts them into message_ids and users.
func (m *Memory) Write(_ context.Context, evs []events.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Keep {
		m.kept = append(m.kept, evs...)
	}
	for i := range evs {
		e := &evs[i]
		if _, ok := m.ids[memKey(e.TenantID, e.MessageID)]; !ok {
			m.ids[memKey(e.TenantID, e.MessageID)] = time.Now().UTC() // as message_ids claims them: at the wall clock
		}
		tied := (e.Type == events.TypeIdentify || e.Type == events.TypeGroup) && e.UserID != "" && e.AccountID != ""
		if !tied {
			continue
		}
		k := memKey(e.TenantID, e.UserID)
		tie := Membership{AccountID: e.AccountID, Since: e.Timestamp.UTC().Truncate(time.Second)} // users.updated_at is whole seconds
		if !slices.Contains(m.members[k], tie) {
			m.members[k] = append(m.members[k], tie)
		}
	}
	return nil
}

// Memberships returns each user's ties to accounts, as Store.Memberships.
func (m *Memory) Memberships(_ context.Context, tenant string, users []string) (map[string][]Membership, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string][]Membership{}
	for _, u := range users {
		if ties := m.members[memKey(tenant, u)]; len(ties) > 0 {
			out[u] = slices.Clone(ties)
		}
	}
	return out, nil
}

// StoredIDs returns which of ids were stored. ClickHouse claims an id at
// the wall clock, so a backtest's (on a clock in the past) are all within
// the horizon: since is not needed.
func (m *Memory) StoredIDs(_ context.Context, tenant string, ids []string, _ time.Time) (map[string]bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]bool{}
	for _, id := range ids {
		if _, ok := m.ids[memKey(tenant, id)]; ok {
			out[id] = true
		}
	}
	return out, nil
}

// ClaimHashes calls each with the hash of every messageId claimed since
// since, as Store.ClaimHashes: a writer started over the memory loads its
// filter from them.
func (m *Memory) ClaimHashes(_ context.Context, since time.Time, each func(hash uint64, claimedAt time.Time)) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k, at := range m.ids {
		if !at.Before(since) {
			tenant, id, _ := strings.Cut(k, "\x00")
			each(dedup.Hash(tenant, id), at)
		}
	}
	return nil
}

// DropClaimsBefore drops nothing: a backtest keeps every claim.
func (m *Memory) DropClaimsBefore(context.Context, time.Time) (int, error) { return 0, nil }

// Saved writes the events kept to s, a chunk at a time.
func (m *Memory) Saved(ctx context.Context, s *Store) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for chunk := range slices.Chunk(m.kept, 100_000) {
		if err := s.Write(ctx, chunk); err != nil {
			return err
		}
	}
	return nil
}
