// Package writer moves events from the EVENTS stream into ClickHouse. It
// runs as a natsjs consumer handler: a batch is acked only after its
// insert succeeded, so an acknowledged event is never lost, and a
// redelivered batch only adds rows that queries dedup by messageId.
package writer

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
)

// maxCachedUsers bounds the user -> account cache; past it the cache starts over.
const maxCachedUsers = 1 << 20

// Writer is the consumer handler.
type Writer struct {
	store *store.Store

	mu       sync.Mutex
	accounts map[string]string // tenant + "\x00" + user -> account

	// AfterWrite, if set, runs after each successful insert and before the
	// acks. Fault tests use it to crash exactly there.
	AfterWrite func()
}

// New returns a writer over s.
func New(s *store.Store) *Writer { return &Writer{store: s, accounts: map[string]string{}} }

// Handle decodes a batch of messages and inserts its events.
func (w *Writer) Handle(ctx context.Context, msgs []jetstream.Msg) error {
	var evs []events.Event
	for _, m := range msgs {
		batch, err := events.Decode(m.Data())
		if err != nil {
			return fmt.Errorf("message %s: %w", m.Subject(), err)
		}
		evs = append(evs, batch...)
	}
	if err := w.resolveAccounts(ctx, evs); err != nil {
		return err
	}
	if err := w.store.Write(ctx, evs); err != nil {
		return err
	}
	if w.AfterWrite != nil {
		w.AfterWrite()
	}
	return nil
}

// resolveAccounts gives events without an account the account of their
// user's latest group call: from this batch, this writer's cache, or
// ClickHouse.
func (w *Writer) resolveAccounts(ctx context.Context, evs []events.Event) error {
	w.mu.Lock()
	if len(w.accounts) > maxCachedUsers {
		w.accounts = map[string]string{}
	}
	latest := map[string]int{} // group calls in this batch: the newest wins
	for i, e := range evs {
		if e.Type == events.TypeGroup && e.UserID != "" {
			k := e.TenantID + "\x00" + e.UserID
			if j, ok := latest[k]; !ok || evs[j].Timestamp.Before(e.Timestamp) {
				latest[k] = i
				w.accounts[k] = e.AccountID
			}
		}
	}
	missing := map[string][]string{} // tenant -> users
	for i := range evs {
		e := &evs[i]
		if e.AccountID != "" || e.UserID == "" {
			continue
		}
		if a, ok := w.accounts[e.TenantID+"\x00"+e.UserID]; ok {
			e.AccountID = a
		} else {
			missing[e.TenantID] = append(missing[e.TenantID], e.UserID)
		}
	}
	w.mu.Unlock()
	for tenant, users := range missing {
		found, err := w.store.UserAccounts(ctx, tenant, users)
		if err != nil {
			return err
		}
		w.mu.Lock()
		for u, a := range found {
			w.accounts[tenant+"\x00"+u] = a
		}
		w.mu.Unlock()
		for i := range evs {
			if e := &evs[i]; e.TenantID == tenant && e.AccountID == "" {
				e.AccountID = found[e.UserID]
			}
		}
	}
	return nil
}
