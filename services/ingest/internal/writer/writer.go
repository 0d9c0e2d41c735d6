// Package writer moves events from the EVENTS stream into ClickHouse, each
// tenant's messageId once within the dedup horizon.
//
// The stream is partitioned by tenant and each partition is consumed by one
// writer at a time (a pinned consumer), so one writer sees all of a
// tenant's events, in order, and can check messageIds and store them
// without a race:
//
//  1. Events whose messageId the batch already holds are dropped.
//  2. The in-memory filter of stored messageIds (dedup.Filter) clears
//     almost every new event at once. The few hits are checked against
//     message_ids in ClickHouse, and those stored are dropped: a client
//     retry, however re-batched or re-timed, or a redelivery of a message
//     whose insert succeeded but whose ack was lost.
//  3. New events get their account (Attribute) and are inserted; the
//     message_ids view records them in the same insert.
//
// A batch is acked only after its insert, so an acknowledged event is never
// lost. After a failed batch (an insert may have stored part of it) the
// partition catches up from message_ids before its next batch, so the
// filter's misses stay certain.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	store Store
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
	// Notify, if set, publishes the notices of what an insert stored,
	// after the insert and before the acks (DESIGN.md, "Detection"). A
	// failure is logged and counted, not retried: the events are stored,
	// and the detection services' sweep recomputes every account anyway.
	Notify func(ctx context.Context, notices []events.StoredNotice) error
	// Stored, when set, is called with the events each batch stored, after
	// the insert and before Notify: a backtest keeps them in memory for its
	// services to read (accounts.History).
	Stored func(evs []events.Event)

	outcomes     metric.Int64Counter
	unattributed metric.Int64Counter
	filterSize   metric.Int64ObservableGauge

	notifyFailures metric.Int64Counter
}

// partition is what one partition's handler keeps between batches. Only
// that handler touches it (a runner handles one batch at a time).
type partition struct {
	// maxSeen is the highest consumer sequence handled, of the consumer's
	// declaration epoch. A delivery past maxSeen+1, or from a consumer
	// declared again, means another writer may have held the partition
	// meanwhile, so what this one knows may be stale.
	maxSeen, epoch uint64
	// members are the accounts of users seen, by tenant and user, sorted
	// by time: the attribution cache.
	members map[string][]store.Membership
}

// maxCachedUsers bounds each partition's attribution cache; past it the
// cache starts over (it is reloaded from ClickHouse on demand).
const maxCachedUsers = 1 << 20

// New returns a writer over s. Load must run before the handlers.
// Store is what the writer stores events in and reads back: ClickHouse
// (*store.Store) for the service, memory (store.Memory) for a backtest.
type Store interface {
	Write(ctx context.Context, evs []events.Event) error
	Memberships(ctx context.Context, tenant string, users []string) (map[string][]store.Membership, error)
	StoredIDs(ctx context.Context, tenant string, ids []string, since time.Time) (map[string]bool, error)
	ClaimHashes(ctx context.Context, since time.Time, each func(hash uint64, claimedAt time.Time)) error
	DropClaimsBefore(ctx context.Context, day time.Time) (int, error)
}

// UseStore makes the writer store in s: a backtest's memory.
func (w *Writer) UseStore(s Store) { w.store = s }

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
		metric.WithDescription("Events the writer handled, by tenant and outcome: stored; duplicate (its messageId was stored before: "+
			"a client retry, or a redelivery after a lost ack).")); err != nil {
		return nil, err
	}
	if w.unattributed, err = meter.Int64Counter("stickpoint.ingest.writer.unattributed",
		metric.WithDescription("Track, page and screen events stored without an account, by tenant.")); err != nil {
		return nil, err
	}
	if w.notifyFailures, err = meter.Int64Counter("stickpoint.ingest.writer.notify.failures",
		metric.WithDescription("Stored notices the writer failed to publish: their accounts wait for the detection services' sweep.")); err != nil {
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
			// The insert may have stored part of the batch, which the
			// filter doesn't know: catch up before the next batch. And
			// what the cache learnt from this batch may not be stored.
			part.maxSeen = 0
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
}

func (w *Writer) handle(ctx context.Context, part *partition, msgs []jetstream.Msg) error {
	if epoch := natsjs.Epoch(ctx); epoch != part.epoch {
		part.epoch, part.maxSeen = epoch, 0
	}
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
	return w.write(ctx, part, batch)
}

// WriteEvents stores events as the handler of their tenant's partition
// would, outside the stream: each messageId once, attributed, noticed.
// It is for a backtest, which feeds history in time order in one process
// and must know each step is stored before it evaluates it. It must not
// run beside the partition's consumer.
func (w *Writer) WriteEvents(ctx context.Context, evs []events.Event) error {
	byPart := map[int][]*candidate{}
	pool := make([]candidate, len(evs))
	seen := map[uint64]bool{}
	for i, e := range evs {
		pool[i] = candidate{ev: e, seq: uint64(i + 1), hash: dedup.Hash(e.TenantID, e.MessageID)}
		if seen[pool[i].hash] {
			continue // the first of a messageId in the history stands
		}
		seen[pool[i].hash] = true
		p := natsjs.EventPartition(e.TenantID, len(w.parts))
		byPart[p] = append(byPart[p], &pool[i])
	}
	for p := range len(w.parts) {
		if batch := byPart[p]; len(batch) > 0 {
			if err := w.write(ctx, w.parts[p], batch); err != nil {
				clear(w.parts[p].members)
				return err
			}
		}
	}
	return nil
}

// SetClock sets the writer's clock (a backtest's simulated one): the
// dedup horizon and the claims' hours follow it.
func (w *Writer) SetClock(now func() time.Time) { w.now = now }

// write stores a batch of candidates, one per messageId: those not
// stored before, attributed to their accounts, then noticed.
func (w *Writer) write(ctx context.Context, part *partition, batch []*candidate) error {
	fresh, err := w.unstored(ctx, batch)
	if err != nil {
		return err
	}
	if err := w.attribute(ctx, part, fresh); err != nil {
		return err
	}
	write := make([]events.Event, len(fresh))
	for i, c := range fresh {
		write[i] = c.ev
	}
	// The commit: past this point another writer must not be redoing the
	// batch (a stall past AckWait hands the partition over).
	if err := natsjs.Owned(ctx); err != nil {
		return err
	}
	if err := w.store.Write(ctx, write); err != nil {
		return err
	}
	hour := hourOf(w.now())
	w.mu.Lock()
	for _, c := range fresh {
		w.filter.Add(c.hash, hour)
	}
	w.mu.Unlock()
	// Counted per tenant and batch: an attribute set per event costs more
	// than the rest of the bookkeeping.
	type tally struct{ stored, unattributed int }
	tallies := map[string]*tally{}
	for _, c := range fresh {
		t := tallies[c.ev.TenantID]
		if t == nil {
			t = &tally{}
			tallies[c.ev.TenantID] = t
		}
		t.stored++
		if c.ev.AccountID == "" && events.IsUsage(c.ev.Type) {
			t.unattributed++
		}
	}
	for tenant, t := range tallies {
		w.count(ctx, tenant, "stored", t.stored)
		if t.unattributed > 0 {
			w.unattributed.Add(ctx, int64(t.unattributed), metric.WithAttributes(attribute.String("tenant", tenant)))
		}
	}
	if w.Stored != nil {
		w.Stored(write)
	}
	if w.Notify != nil {
		if err := w.Notify(ctx, events.StoredNotices(write)); err != nil {
			w.notifyFailures.Add(ctx, 1)
			w.log.WarnContext(ctx, "stored notice not published; the accounts wait for the next sweep", "error", err)
		}
	}
	if w.AfterWrite != nil {
		w.AfterWrite()
	}
	return nil
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

// unstored returns the candidates not stored yet; the others are
// duplicates, counted and dropped.
func (w *Writer) unstored(ctx context.Context, batch []*candidate) ([]*candidate, error) {
	suspects := map[string][]string{} // messageIds by tenant
	w.mu.Lock()
	for _, c := range batch {
		if w.filter.Has(c.hash) {
			suspects[c.ev.TenantID] = append(suspects[c.ev.TenantID], c.ev.MessageID)
		}
	}
	w.mu.Unlock()
	if len(suspects) == 0 {
		return batch, nil
	}
	stored := map[string]map[string]bool{}
	for tenant, ids := range suspects {
		found, err := w.store.StoredIDs(ctx, tenant, ids, w.now().Add(-w.cfg.Horizon))
		if err != nil {
			return nil, err
		}
		stored[tenant] = found
		w.count(ctx, tenant, "duplicate", len(found))
	}
	out := batch[:0:0]
	for _, c := range batch {
		if !stored[c.ev.TenantID][c.ev.MessageID] {
			out = append(out, c)
		}
	}
	return out, nil
}
