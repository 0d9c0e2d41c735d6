// Package writer moves events from the EVENTS stream into ClickHouse, each
// tenant's messageId once within the dedup horizon.
//
// The stream is partitioned by tenant and each partition is consumed by one
// writer at a time (a pinned consumer), so one writer sees all of a
// tenant's events, in order, and can check and claim messageIds without a
// race:
//
//  1. Events whose messageId the batch already holds are dropped (the
//     copy from the oldest stream message is kept).
//  2. The in-memory filter of stored messageIds (dedup.Filter) clears
//     almost every new event at once. The few hits are checked against
//     message_ids in ClickHouse: a claim by another stream message means a
//     duplicate (a client retry, however re-batched or re-timed), dropped;
//     a claim by this same message means a redelivery, and only the rows
//     that did not make it in are inserted, under the claimed account.
//  3. New events get their account (Attribute), are claimed in
//     message_ids, and only then inserted. A crash between the two leaves
//     claims whose redelivery restores the rows.
//
// A batch is acked only after its inserts, so an acknowledged event is
// never lost.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/services/ingest/internal/dedup"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
)

const scope = "github.com/stickpoint/stickpoint/services/ingest/internal/writer"

// Config configures a Writer.
type Config struct {
	// Horizon is how long a stored messageId is remembered: a retry within
	// it is not stored again.
	Horizon time.Duration
	// AckWait is the consumers' AckWait. A claim can become visible up to
	// that long after it was made (an insert in flight when another writer
	// looked), so catching up re-reads that far back, plus a minute for
	// clocks that differ between writers.
	AckWait time.Duration
	// Partitions is the number of EVENTS partitions, one handler each.
	Partitions int
}

// Writer is the consumer handler of every partition.
type Writer struct {
	store *store.Store
	cfg   Config
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex // guards filter and syncedAt: partitions share them
	filter   *dedup.Filter
	syncedAt time.Time // the filter holds every claim made before this, less the margin

	parts []*partition

	// AfterWrite, if set, runs after each successful insert and before the
	// acks. Fault tests use it to crash exactly there.
	AfterWrite func()

	outcomes     metric.Int64Counter
	unattributed metric.Int64Counter
	filterSize   metric.Int64ObservableGauge
}

// partition is what one partition's handler keeps between batches. Only
// that handler touches it (a runner handles one batch at a time).
type partition struct {
	// maxSeen is the highest consumer sequence handled. A delivery past
	// maxSeen+1 means another writer held the partition meanwhile, so
	// what this one knows may be stale.
	maxSeen uint64
	// members are the accounts of users seen, by tenant and user, sorted
	// by time: the attribution cache.
	members map[string][]store.Membership
}

// maxCachedUsers bounds each partition's attribution cache; past it the
// cache starts over (it is reloaded from ClickHouse on demand).
const maxCachedUsers = 1 << 20

// New returns a writer over s. Load must run before the handlers.
func New(s *store.Store, cfg Config, log *slog.Logger) (*Writer, error) {
	if cfg.Horizon <= 0 || cfg.AckWait <= 0 || cfg.Partitions < 1 {
		return nil, errors.New("writer: horizon, ack wait and partitions must be positive")
	}
	w := &Writer{store: s, cfg: cfg, log: log, now: time.Now, filter: dedup.NewFilter()}
	for range cfg.Partitions {
		w.parts = append(w.parts, &partition{members: map[string][]store.Membership{}})
	}
	meter := otel.GetMeterProvider().Meter(scope)
	var err error
	if w.outcomes, err = meter.Int64Counter("stickpoint.ingest.writer.events",
		metric.WithDescription("Events the writer handled, by tenant and outcome: stored; duplicate (a messageId stored before, from another message); "+
			"redelivered (already stored by this message); restored (claimed, then lost in a crash, now stored).")); err != nil {
		return nil, err
	}
	if w.unattributed, err = meter.Int64Counter("stickpoint.ingest.writer.unattributed",
		metric.WithDescription("Track, page and screen events stored without an account, by tenant.")); err != nil {
		return nil, err
	}
	if w.filterSize, err = meter.Int64ObservableGauge("stickpoint.ingest.writer.dedup.entries",
		metric.WithDescription("MessageIds in the writer's in-memory dedup filter.")); err != nil {
		return nil, err
	}
	if _, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		w.mu.Lock()
		n := w.filter.Len()
		w.mu.Unlock()
		o.ObserveInt64(w.filterSize, int64(n))
		return nil
	}, w.filterSize); err != nil {
		return nil, err
	}
	return w, nil
}

// Load fills the filter with the claims of the horizon. It runs before any
// handler, and takes about a second per few million claims.
func (w *Writer) Load(ctx context.Context) error {
	start := time.Now()
	if err := w.catchUp(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	n, bytes := w.filter.Len(), w.filter.Bytes()
	w.mu.Unlock()
	w.log.InfoContext(ctx, "dedup filter loaded", "message_ids", n, "bytes", bytes, "took_ms", time.Since(start).Milliseconds())
	return nil
}

// margin is how far before the last sync a catch-up reads again.
func (w *Writer) margin() time.Duration { return w.cfg.AckWait + time.Minute }

// catchUp adds to the filter the claims made since the last sync (all of
// the horizon the first time): those of other writers that held a
// partition before this one.
func (w *Writer) catchUp(ctx context.Context) error {
	now := w.now()
	w.mu.Lock()
	since := w.syncedAt.Add(-w.margin())
	w.mu.Unlock()
	if floor := now.Add(-w.cfg.Horizon); since.Before(floor) {
		since = floor
	}
	type claim struct {
		hash uint64
		hour uint32
	}
	var got []claim
	err := w.store.ClaimHashes(ctx, since, func(h uint64, at time.Time) {
		got = append(got, claim{h, hourOf(at)})
	})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range got {
		w.filter.Add(c.hash, c.hour)
	}
	if now.After(w.syncedAt) {
		w.syncedAt = now
	}
	return nil
}

func hourOf(t time.Time) uint32 { return uint32(t.Unix() / 3600) }

// Maintain drops what the horizon no longer needs: old filter entries, and
// the daily partitions of old claims. The service runs it every hour.
func (w *Writer) Maintain(ctx context.Context) error {
	oldest := w.now().Add(-w.cfg.Horizon - time.Hour)
	w.mu.Lock()
	w.filter.Expire(hourOf(oldest))
	w.mu.Unlock()
	// A day's partition goes once all of it is a day past the horizon.
	dropped, err := w.store.DropClaimsBefore(ctx, oldest.Add(-24*time.Hour))
	if dropped > 0 {
		w.log.InfoContext(ctx, "dropped expired message id claims", "partitions", dropped)
	}
	return err
}

// Handler is the consumer handler of partition p.
func (w *Writer) Handler(p int) func(context.Context, []jetstream.Msg) error {
	return func(ctx context.Context, msgs []jetstream.Msg) error {
		part := w.parts[p]
		if err := w.handle(ctx, part, msgs); err != nil {
			// What the cache learnt from this batch may not be stored.
			clear(part.members)
			return err
		}
		return nil
	}
}

// candidate is an event of the batch and the stream message carrying it.
type candidate struct {
	ev   events.Event
	seq  uint64 // stream sequence of its message
	hash uint64
	// restore: claimed by this very message before, but not stored.
	restore bool
}

func (w *Writer) handle(ctx context.Context, part *partition, msgs []jetstream.Msg) error {
	batch, stale, err := w.decode(part, msgs)
	if err != nil {
		return err
	}
	if stale {
		if err := w.catchUp(ctx); err != nil {
			return err
		}
		clear(part.members)
	}
	stored, err := w.checkClaims(ctx, batch)
	if err != nil {
		return err
	}
	fresh := make([]*candidate, 0, len(stored)) // new events, to attribute and claim
	for _, c := range stored {
		if !c.restore {
			fresh = append(fresh, c)
		}
	}
	if err := w.attribute(ctx, part, fresh); err != nil {
		return err
	}
	claims := make([]store.Claim, 0, len(fresh))
	write := make([]events.Event, 0, len(stored))
	for _, c := range fresh {
		claims = append(claims, store.Claim{TenantID: c.ev.TenantID, MessageID: c.ev.MessageID, Hash: c.hash,
			AccountID: c.ev.AccountID, StreamSeq: c.seq})
	}
	// The commit: past this point another writer must not be redoing the
	// batch (a stall past AckWait hands the partition over).
	if err := natsjs.Owned(ctx); err != nil {
		return err
	}
	now := w.now()
	if len(claims) > 0 {
		if err := w.store.AddClaims(ctx, claims, now); err != nil {
			return err
		}
	}
	for _, c := range stored {
		write = append(write, c.ev)
	}
	if err := w.store.Write(ctx, write); err != nil {
		return err
	}
	w.mu.Lock()
	for _, c := range fresh {
		w.filter.Add(c.hash, hourOf(now))
	}
	w.mu.Unlock()
	// Counted per tenant and batch: an attribute set per event costs more
	// than the rest of the bookkeeping.
	type tally struct{ stored, restored, unattributed int }
	tallies := map[string]*tally{}
	for _, c := range stored {
		t := tallies[c.ev.TenantID]
		if t == nil {
			t = &tally{}
			tallies[c.ev.TenantID] = t
		}
		if c.restore {
			t.restored++
		} else {
			t.stored++
		}
		if c.ev.AccountID == "" && isUsage(c.ev.Type) {
			t.unattributed++
		}
	}
	for tenant, t := range tallies {
		w.count(ctx, tenant, "stored", t.stored)
		w.count(ctx, tenant, "restored", t.restored)
		if t.unattributed > 0 {
			w.unattributed.Add(ctx, int64(t.unattributed), metric.WithAttributes(attribute.String("tenant", tenant)))
		}
	}
	if w.AfterWrite != nil {
		w.AfterWrite()
	}
	return nil
}

func isUsage(typ string) bool {
	return typ == events.TypeTrack || typ == events.TypePage || typ == events.TypeScreen
}

func (w *Writer) count(ctx context.Context, tenant, outcome string, n int) {
	if n > 0 {
		w.outcomes.Add(ctx, int64(n), metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("outcome", outcome)))
	}
}

// decode reads the batch's events, keeping one copy of each messageId:
// the one from the oldest stream message, which is the one that may hold
// the claim. stale reports a delivery gap (see partition.maxSeen), or the
// partition's first batch in this process.
func (w *Writer) decode(part *partition, msgs []jetstream.Msg) (batch []*candidate, stale bool, _ error) {
	index := map[uint64]int{} // by messageId hash
	var pool []candidate      // candidates are allocated together, not one by one
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, false, fmt.Errorf("message %s: %w", m.Subject(), err)
		}
		if part.maxSeen == 0 || md.Sequence.Consumer > part.maxSeen+1 {
			stale = true
		}
		part.maxSeen = max(part.maxSeen, md.Sequence.Consumer)
		evs, err := events.Decode(m.Data())
		if err != nil {
			return nil, false, fmt.Errorf("message %s (stream sequence %d): %w", m.Subject(), md.Sequence.Stream, err)
		}
		if cap(pool)-len(pool) < len(evs) {
			pool = make([]candidate, 0, max(len(evs), 1024))
		}
		for _, e := range evs {
			pool = append(pool, candidate{ev: e, seq: md.Sequence.Stream, hash: dedup.Hash(e.TenantID, e.MessageID)})
			c := &pool[len(pool)-1]
			if i, ok := index[c.hash]; ok && batch[i].ev.MessageID == e.MessageID && batch[i].ev.TenantID == e.TenantID {
				if c.seq < batch[i].seq {
					batch[i] = c
				}
				continue
			}
			index[c.hash] = len(batch)
			batch = append(batch, c)
		}
	}
	return batch, stale, nil
}

// checkClaims returns the candidates to store: new ones, and ones whose
// own message claimed them before without storing them (restore set).
// The rest are stored already and are counted and dropped.
func (w *Writer) checkClaims(ctx context.Context, batch []*candidate) ([]*candidate, error) {
	suspects := map[string][]*candidate{} // by tenant
	w.mu.Lock()
	for _, c := range batch {
		if w.filter.Has(c.hash) {
			suspects[c.ev.TenantID] = append(suspects[c.ev.TenantID], c)
		}
	}
	w.mu.Unlock()
	if len(suspects) == 0 {
		return batch, nil
	}
	drop := map[*candidate]bool{}
	since := w.now().Add(-w.cfg.Horizon)
	for tenant, cs := range suspects {
		ids := make([]string, len(cs))
		for i, c := range cs {
			ids[i] = c.ev.MessageID
		}
		claims, err := w.store.Claims(ctx, tenant, ids, since)
		if err != nil {
			return nil, err
		}
		var own []*candidate
		duplicates := 0
		for _, c := range cs {
			cl, ok := claims[c.ev.MessageID]
			switch {
			case !ok: // a false hit of the filter, or a released claim: new
			case cl.StreamSeq != c.seq:
				drop[c] = true
				duplicates++
			default:
				c.restore, c.ev.AccountID = true, cl.AccountID
				own = append(own, c)
			}
		}
		w.count(ctx, tenant, "duplicate", duplicates)
		if len(own) == 0 {
			continue
		}
		var accounts, ownIDs []string
		for _, c := range own {
			accounts = append(accounts, c.ev.AccountID)
			ownIDs = append(ownIDs, c.ev.MessageID)
		}
		slices.Sort(accounts)
		present, err := w.store.StoredEvents(ctx, tenant, slices.Compact(accounts), ownIDs)
		if err != nil {
			return nil, err
		}
		redelivered := 0
		for _, c := range own {
			if present[c.ev.MessageID] {
				drop[c] = true
				redelivered++
			}
		}
		w.count(ctx, tenant, "redelivered", redelivered)
	}
	out := batch[:0:0]
	for _, c := range batch {
		if !drop[c] {
			out = append(out, c)
		}
	}
	return out, nil
}

// Release gives up the claims a dead-lettered message made, so replaying it
// after a fix stores its events. Claims another message made stay.
func (w *Writer) Release(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	evs, err := events.Decode(m.Data())
	if err != nil {
		return // it failed before claiming anything
	}
	byTenant := map[string][]string{}
	for _, e := range evs {
		byTenant[e.TenantID] = append(byTenant[e.TenantID], e.MessageID)
	}
	var release []store.Claim
	for tenant, ids := range byTenant {
		claims, err := w.store.Claims(ctx, tenant, ids, w.now().Add(-w.cfg.Horizon))
		if err != nil {
			w.log.WarnContext(ctx, "release claims of a dead-lettered message", "error", err)
			return
		}
		for _, c := range claims {
			if c.StreamSeq == md.Sequence.Stream {
				c.Released, c.Hash = true, dedup.Hash(tenant, c.MessageID)
				release = append(release, c)
			}
		}
	}
	if len(release) == 0 {
		return
	}
	if err := w.store.AddClaims(ctx, release, w.now()); err != nil {
		w.log.WarnContext(ctx, "release claims of a dead-lettered message; a replay within the horizon would be taken for a duplicate",
			"stream_seq", md.Sequence.Stream, "error", err)
		return
	}
	w.log.InfoContext(ctx, "released the claims of a dead-lettered message", "stream_seq", md.Sequence.Stream, "message_ids", len(release))
}
