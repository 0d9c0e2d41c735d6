package accounts

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/stickpoint/stickpoint/pkg/events"
)

// History is a tenant's stored events held in memory, by account, as
// ClickHouse would return them: what a backtest's services read instead
// of querying ClickHouse at every step of its clock (a query costs
// milliseconds whatever its size, and a backtest at --step 1h has
// thousands of steps). It is filled with exactly what the writer stored:
// each messageId once, attributed to its account.
//
// Times are as the events table keeps them: to the millisecond; a
// group call's traits at whole seconds, as account_traits keeps them.
type History struct {
	mu       sync.RWMutex
	accounts map[string]*accountHistory // by tenant and account
}

type accountHistory struct {
	events []events.Event // in time order, then in the order stored
	calls  []Call         // one per distinct traits, at its latest time
	// merged is Merge(calls), kept until a group call changes calls:
	// services read an account's traits at every step it is evaluated,
	// and a group call is rare.
	merged Traits
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{accounts: map[string]*accountHistory{}} }

func key(tenant, account string) string { return tenant + "\x00" + account }

// Add adds events the writer stored; those without an account are not
// kept (no account read sees them).
func (h *History) Add(evs []events.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range evs {
		if e.AccountID == "" {
			continue
		}
		e.Timestamp = e.Timestamp.UTC().Truncate(time.Millisecond)
		a := h.accounts[key(e.TenantID, e.AccountID)]
		if a == nil {
			a = &accountHistory{}
			h.accounts[key(e.TenantID, e.AccountID)] = a
		}
		// Events come in about time order: find the place from the end.
		i := len(a.events)
		for i > 0 && a.events[i-1].Timestamp.After(e.Timestamp) {
			i--
		}
		a.events = slices.Insert(a.events, i, e)
		if e.Type == events.TypeGroup {
			a.addCall(e)
		}
	}
}

// addCall keeps a group call's traits, as account_traits does: one row
// per distinct traits, at its latest time, in whole seconds.
func (a *accountHistory) addCall(e events.Event) {
	traits := e.Traits
	if len(traits) == 0 {
		traits = []byte("{}")
	}
	at := e.Timestamp.Truncate(time.Second)
	a.merged = nil
	for i := range a.calls {
		if string(a.calls[i].Traits) == string(traits) {
			if at.After(a.calls[i].At) {
				a.calls[i].At = at
			}
			return
		}
	}
	a.calls = append(a.calls, Call{At: at, Traits: slices.Clone(traits)})
}

// Events returns the account's stored events in time order. The slice is
// the history's own: callers must not change it, nor keep it across an
// Add (a backtest adds a step's events between its services' rounds).
func (h *History) Events(tenant, account string) []events.Event {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if a := h.accounts[key(tenant, account)]; a != nil {
		return a.events
	}
	return nil
}

// Traits returns the merged traits of the given accounts, as
// Reader.Traits does: an account without a group call is absent. Each
// account's Traits are the history's own, as Events' slices are: callers
// must not change them.
func (h *History) Traits(tenant string, ids []string) map[string]Traits {
	// A write lock: the merge is kept on first read.
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]Traits, len(ids))
	for _, id := range ids {
		if a := h.accounts[key(tenant, id)]; a != nil && len(a.calls) > 0 {
			if a.merged == nil {
				a.merged = Merge(a.calls)
			}
			out[id] = a.merged
		}
	}
	return out
}

// FirstTraitsAt is the earliest time of the account's group calls as
// account_traits keeps them (whole seconds), zero when it has none.
func (h *History) FirstTraitsAt(tenant, account string) time.Time {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var first time.Time
	if a := h.accounts[key(tenant, account)]; a != nil {
		for _, c := range a.calls {
			if first.IsZero() || c.At.Before(first) {
				first = c.At
			}
		}
	}
	return first
}

// WithEvents lists the tenant's accounts that have events, in order, as
// Reader.WithEvents does.
func (h *History) WithEvents(tenant string) []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	prefix := tenant + "\x00"
	var out []string
	for k := range h.accounts {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix {
			out = append(out, k[len(prefix):])
		}
	}
	sort.Strings(out)
	return out
}
