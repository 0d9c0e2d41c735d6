package api

import (
	"context"
	"log/slog"
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

// getCache holds what Get reads in ClickHouse of every scored account (up
// to its size, the most recently scored first), so a Get answers from
// memory. On two shared cores a single ClickHouse point read under ingest
// load has a p99 near 50 ms by itself, and a Get makes four.
//
// It is a copy of stored rows, never a source: every entry is what
// ClickHouse held, kept current by the writers of what Get reads.
//   - At start, a background reader (run) reads every scored account.
//   - This replica's scorer hands over each round's rows and traits
//     (stored), so a busy account's entry follows its scores in place; an
//     account it scores for the first time is read in the background.
//   - Other writers (milestone tracking's onboarding state, other health
//     replicas' scorers) say which accounts they stored on
//     accounts.changed.<tenant>: those entries are dropped and read again
//     in the background (a Get meanwhile reads ClickHouse).
//   - When a message may have been missed (a reconnect, a slow listener)
//     every entry is dropped, and everything is read again.
//
// A read stores its result only if nothing it read changed meanwhile (a
// Get's: the epoch; the background reader's: touched), so a read that
// raced a write never pins the older rows.
type getCache struct {
	mu      sync.Mutex
	epoch   uint64 // bumped by every change to what Get reads
	entries map[cacheKey]*getInputs
	max     int
	// listener reports messages missed; nil when there is no bus.
	listener *accounts.Listener
	// origin is this replica's scorer's: its messages are in hand already.
	origin string

	// The background reader (run) reads toRead: the accounts a round
	// scored that the copy lacks, and those another writer changed. warm
	// asks it to list every scored account first (at start, and after
	// messages were lost); touched collects the accounts changed while it
	// reads, which it must not store (nil when it is not reading).
	toRead  map[cacheKey]bool
	warm    bool
	touched map[cacheKey]bool
	wake    chan struct{}

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
	c := &getCache{entries: map[cacheKey]*getInputs{}, toRead: map[cacheKey]bool{}, warm: true, wake: make(chan struct{}, 1)}
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
// replica's own (stored handed those over already), and has them read
// again.
func (c *getCache) changed(m accounts.Changed) {
	if m.Origin == c.origin {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for _, id := range m.Accounts {
		k := cacheKey{m.Tenant, id}
		delete(c.entries, k)
		c.touch(k)
		c.wantLocked(k)
	}
}

// stored updates the entries of the accounts a round of this replica's
// scorer scored: the traits it read for each, and the rows it stored.
// Accounts the copy lacks are read in the background.
func (c *getCache) stored(st scorer.Stored) {
	// First, at once: no read in flight keeps what it read, and the
	// accounts the copy lacks are to be read.
	c.mu.Lock()
	c.epoch++
	held := map[string]bool{}
	for _, id := range st.Scored {
		k := cacheKey{st.Tenant, id}
		c.touch(k)
		if c.entries[k] == nil {
			c.wantLocked(k)
		} else {
			held[id] = true
		}
	}
	c.mu.Unlock()
	if len(held) == 0 {
		return
	}
	// Decoding the rows as ReadRows does is the costly part: Gets don't
	// wait for it.
	type storedRow struct {
		row       scorer.Row
		inHistory bool
	}
	rows := map[string]storedRow{}
	var bad []string
	for _, r := range st.Rows {
		if !held[r.AccountID] {
			continue
		}
		stored, err := r.AsStored()
		if err != nil { // not what ReadRows would give: read it again
			bad = append(bad, r.AccountID)
			continue
		}
		rows[r.AccountID] = storedRow{stored, r.InHistory()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range bad {
		k := cacheKey{st.Tenant, id}
		delete(c.entries, k)
		c.wantLocked(k)
	}
	for id := range held {
		k := cacheKey{st.Tenant, id}
		old := c.entries[k]
		if old == nil {
			continue // dropped meanwhile: read again
		}
		in := *old
		in.traits = st.Traits[id]
		// A row is newer than the entry's unless another replica stored
		// one since (and a read took it in): the higher version wins, as
		// in ClickHouse.
		if r, ok := rows[id]; ok && r.row.Version >= old.row.Version {
			in.row, in.hasSpan = r.row, false
			if r.inHistory {
				in.history = withPoint(in.history, [2]float64{float64(r.row.EvaluatedAt.Unix()) / 86400, float64(r.row.Score)})
			}
		}
		c.entries[k] = &in
	}
}

// touch notes a change to k for the background read in flight.
func (c *getCache) touch(k cacheKey) {
	if c.touched != nil {
		c.touched[k] = true
	}
}

// wantLocked has k read in the background, while the copy has room.
func (c *getCache) wantLocked(k cacheKey) {
	if len(c.entries)+len(c.toRead) >= c.max {
		return
	}
	c.toRead[k] = true
	c.wakeLocked()
}

func (c *getCache) wakeLocked() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// readBatch is how many accounts the background reader reads at once: one
// round of queries, as a page of List.
const readBatch = 1000

// run reads in the background what the copy should hold: every scored
// account (list, up to the copy's size) at start and after a loss, then
// the accounts that change, read by read (a tenant's accounts, up to
// readBatch, in one round of queries). It returns when ctx ends.
func (c *getCache) run(ctx context.Context, log *slog.Logger, list func(ctx context.Context, n int) ([]cacheKey, error),
	read func(ctx context.Context, tenant string, ids []string) (map[string]*getInputs, error)) {
	retry := func() bool { // after a failure, wait a second
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
			return true
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		for ctx.Err() == nil {
			c.mu.Lock()
			warm, n := c.warm, c.max
			c.warm = false
			c.mu.Unlock()
			if warm && n > 0 {
				began := time.Now()
				keys, err := list(ctx, n)
				if err != nil {
					log.WarnContext(ctx, "could not list the accounts to keep in memory; retrying", "error", err)
					c.mu.Lock()
					c.warm = true
					c.mu.Unlock()
					if !retry() {
						return
					}
					continue
				}
				c.mu.Lock()
				for _, k := range keys {
					if c.entries[k] == nil {
						c.wantLocked(k)
					}
				}
				c.mu.Unlock()
				log.InfoContext(ctx, "reading the accounts the accounts API keeps in memory", "accounts", len(keys), "took_ms", time.Since(began).Milliseconds())
			}
			tenant, ids := c.next()
			if len(ids) == 0 {
				break
			}
			began := time.Now()
			got, err := read(ctx, tenant, ids)
			if err != nil {
				c.mu.Lock()
				c.touched = nil
				c.mu.Unlock()
				log.WarnContext(ctx, "could not read accounts to keep in memory; retrying", "tenant", tenant, "accounts", len(ids), "error", err)
				if !retry() {
					return
				}
				continue
			}
			c.keep(tenant, ids, got)
			// Rest as long as the read took, as the scorer does: the copy
			// catches up using at most half a core, leaving the rest to
			// ingest and scoring.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Since(began)):
			}
		}
	}
}

// next picks up to readBatch accounts of one tenant to read, and starts
// collecting the changes made while they are read.
func (c *getCache) next() (string, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var tenant string
	var ids []string
	for k := range c.toRead {
		if tenant == "" {
			tenant = k.tenant
		}
		if k.tenant == tenant {
			ids = append(ids, k.account)
			if len(ids) == readBatch {
				break
			}
		}
	}
	if len(ids) > 0 {
		c.touched = map[cacheKey]bool{}
	}
	return tenant, ids
}

// keep stores what the background reader read, but for the accounts
// changed meanwhile: those stay to read again. Accounts without a row
// (not scored yet) are dropped: the round that scores them asks again.
func (c *getCache) keep(tenant string, ids []string, got map[string]*getInputs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	touched := c.touched
	c.touched = nil
	if touched == nil { // everything was dropped meanwhile
		return
	}
	for _, id := range ids {
		k := cacheKey{tenant, id}
		if touched[k] {
			continue
		}
		delete(c.toRead, k)
		if in := got[id]; in != nil && c.entries[k] == nil && len(c.entries) < c.max {
			c.entries[k] = in
		}
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

// clearLocked drops everything and has it all read again.
func (c *getCache) clearLocked() {
	c.epoch++
	clear(c.entries)
	clear(c.toRead)
	c.touched = nil
	c.warm = true
	c.wakeLocked()
}
