package api

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
)

const scope = "github.com/stickpoint/stickpoint/services/health/internal/api"

// getCache holds, for the accounts Get served lately, what Get read of
// them in ClickHouse, so the next Get of one answers from memory. On two
// shared cores a single ClickHouse point read under ingest load has a p99
// near 50 ms by itself, and a Get makes four.
//
// It is a copy of stored rows, never a source: every entry is what
// ClickHouse held, kept current by the writers of what Get reads.
//   - This replica's scorer hands over each round's rows and traits
//     (Stored), so a busy account's entry follows its scores in place.
//   - Other writers (milestone tracking's onboarding state, other health
//     replicas' scorers) say which accounts they stored on
//     accounts.changed.<tenant>, and their entries are dropped, to be read
//     again by the next Get.
//   - When a message may have been missed (a reconnect, a slow listener)
//     every entry is dropped.
//
// A Get that reads stores its result only if nothing changed while it
// read (epoch), so a read that raced a write never pins the older rows.
type getCache struct {
	mu      sync.Mutex
	epoch   uint64 // bumped by every change to what Get reads
	entries map[cacheKey]*getInputs
	max     int
	// listener reports messages missed; nil when there is no bus.
	listener *accounts.Listener
	// origin is this replica's scorer's: its messages are in hand already.
	origin string

	lookups metric.Int64Counter
}

type cacheKey struct{ tenant, account string }

// getInputs is what Get reads of one account; entries are never changed
// in place (a change stores a new one), so a Get uses one unlocked.
type getInputs struct {
	row    scorer.Row
	traits accounts.Traits
	// onboarding is milestone tracking's evaluation; boarded is false
	// when the account has none yet.
	onboarding onboarding
	boarded    bool
	// history is the health_history points (day, score) read or stored
	// since, in time order; Get keeps those of the Success Vector window.
	history [][2]float64
	// span is the first and last event, for a row stored before its state
	// kept them (see Accounts.activity); hasSpan says it was read.
	span    [2]time.Time
	hasSpan bool
}

func newGetCache() *getCache {
	c := &getCache{entries: map[cacheKey]*getInputs{}}
	var err error
	if c.lookups, err = otel.GetMeterProvider().Meter(scope).Int64Counter("stickpoint.accounts.get.cache",
		metric.WithDescription("accounts.v1 Get lookups in the replica's copy in memory, by result (hit, miss).")); err != nil {
		c.lookups = nil
	}
	return c
}

// get returns the account's entry, or nil and the epoch a read must find
// unchanged to store what it read.
func (c *getCache) get(ctx context.Context, tenant, id string) (*getInputs, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listener != nil && c.listener.Lost() {
		c.clearLocked()
	}
	in := c.entries[cacheKey{tenant, id}]
	if c.lookups != nil {
		result := "hit"
		if in == nil {
			result = "miss"
		}
		c.lookups.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
	}
	return in, c.epoch
}

// fill stores what a Get read, unless something changed since epoch.
func (c *getCache) fill(tenant, id string, in *getInputs, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max <= 0 || c.epoch != epoch {
		return
	}
	if len(c.entries) >= c.max {
		for k := range c.entries { // an arbitrary one: map order
			delete(c.entries, k)
			break
		}
	}
	c.entries[cacheKey{tenant, id}] = in
}

// changed drops the entries a Changed message names, unless it is this
// replica's own (Stored handed those over already).
func (c *getCache) changed(m accounts.Changed) {
	if m.Origin == c.origin {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, id := range m.Accounts {
		delete(c.entries, cacheKey{m.Tenant, id})
	}
}

// stored updates the entries of the accounts a round of this replica's
// scorer scored: the traits it read for each, and the rows it stored.
func (c *getCache) stored(st scorer.Stored) {
	rows := make(map[string]scorer.Row, len(st.Rows))
	for _, r := range st.Rows {
		rows[r.AccountID] = r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, id := range st.Scored {
		k := cacheKey{st.Tenant, id}
		old := c.entries[k]
		if old == nil {
			continue
		}
		in := *old
		in.traits = st.Traits[id]
		if r, ok := rows[id]; ok {
			stored, err := r.AsStored()
			if err != nil { // not what ReadRows would give: read it again
				delete(c.entries, k)
				continue
			}
			in.row, in.hasSpan = stored, false
			if r.InHistory() {
				in.history = withPoint(in.history, [2]float64{float64(r.EvaluatedAt.Unix()) / 86400, float64(r.Score)})
			}
		}
		c.entries[k] = &in
	}
}

// withPoint is history with p added in time order, replacing a point at
// the same time (health_history's key) and leaving out those older than
// the Success Vector's window before p: a new slice, the old one is a
// Get's to read.
func withPoint(history [][2]float64, p [2]float64) [][2]float64 {
	out := make([][2]float64, 0, len(history)+1)
	for _, h := range history {
		if h[0] != p[0] && h[0] > p[0]-vectorWindow.Hours()/24 {
			out = append(out, h)
		}
	}
	out = append(out, p)
	slices.SortStableFunc(out, func(a, b [2]float64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	return out
}

func (c *getCache) clearLocked() {
	c.epoch++
	clear(c.entries)
}
