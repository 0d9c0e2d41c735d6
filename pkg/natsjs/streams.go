package natsjs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names and subjects. Every subject carries the tenant.
const (
	// EventsStream holds usage events on their way to ClickHouse. Ingest
	// publishes them on events.<tenant>.<type>; the stream stores them as
	// events.<partition>.<tenant>.<type> (see EventPartition).
	EventsStream = "EVENTS"
	// SignalsStream holds derived signals: signals.<tenant>.<kind>.
	SignalsStream = "SIGNALS"
	// StoredStream carries the writer's notices of what it stored, on
	// stored.<tenant>: the accounts touched, for the detection services
	// to recompute (DESIGN.md, "Detection").
	StoredStream = "STORED"
	// DeadLetterStream keeps what a consumer gave up on:
	// deadletter.<stream>.<consumer>.
	DeadLetterStream = "DEADLETTER"
	// AlertsStream carries every change to an alert, on alerts.<tenant>:
	// what `stickpoint alerts watch` streams, resuming from a sequence.
	AlertsStream = "ALERTS"
	// DeliveriesStream holds the alert notifications owed to channels, on
	// deliveries.<tenant>, until delivered or given up on.
	DeliveriesStream = "DELIVERIES"
)

// EventSubject is the subject ingest publishes events of type typ for
// tenant on.
func EventSubject(tenant, typ string) string { return "events." + tenant + "." + typ }

// EventPartition is the partition the EVENTS stream files tenant's events
// under, out of n: the FNV-1a hash of the tenant modulo n, as JetStream's
// partition() subject mapping computes it. One partition holds whole
// tenants, so the one writer consuming it sees all of a tenant's events in
// order, which exactly-once per messageId relies on.
func EventPartition(tenant string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant))
	return int(h.Sum32() % uint32(n))
}

// EventPartitionFilter is the filter subject of one partition's events.
func EventPartitionFilter(p int) string { return "events." + strconv.Itoa(p) + ".>" }

// SignalSubject is the subject of a signal of kind for tenant.
func SignalSubject(tenant, kind string) string { return "signals." + tenant + "." + kind }

// StoredSubject is the subject of the writer's notices for tenant.
func StoredSubject(tenant string) string { return "stored." + tenant }

// AlertSubject is the subject of tenant's alert changes.
func AlertSubject(tenant string) string { return "alerts." + tenant }

// DeliverySubject is the subject of tenant's alert notifications.
func DeliverySubject(tenant string) string { return "deliveries." + tenant }

// DeadLetterSubject is where consumer durable of stream dead-letters.
func DeadLetterSubject(stream, durable string) string {
	return "deadletter." + stream + "." + durable
}

// Streams are the stream definitions every Stickpoint process agrees on.
func (b *Bus) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        EventsStream,
			Description: "Usage events from ingest, held until the writer has stored them in ClickHouse.",
			Subjects:    []string{"events.>"},
			SubjectTransform: &jetstream.SubjectTransformConfig{
				Source:      "events.*.*",
				Destination: fmt.Sprintf("events.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", b.cfg.EventPartitions),
			},
			Storage:  b.storage(),
			Replicas: b.cfg.Replicas,
			// The writer purges what it stored (ConsumerConfig.PurgeAcked):
			// each partition up to its consumer's ack floor, every second.
			// So the stream holds what is not yet in ClickHouse, plus about
			// a second, and its byte limit bounds that backlog. When it is
			// full, new events are refused (ingest answers 503 and clients
			// retry) and none is discarded. There is no age limit: it would
			// discard acknowledged events that a writer outage kept from
			// ClickHouse.
			//
			// Not a work queue, which removes each message as it is acked:
			// with nats.sync_always every removal is its own fsync, which
			// halved the rate of single-event requests. A purge removes
			// whole blocks and fsyncs once.
			Retention:  jetstream.LimitsPolicy,
			MaxBytes:   b.cfg.EventsMaxBytes,
			Discard:    jetstream.DiscardNew,
			Duplicates: b.cfg.DuplicateWindow,
		},
		{
			Name:        SignalsStream,
			Description: "Customer-success signals: milestones, health, cancel intent, churn.",
			Subjects:    []string{"signals.>"},
			Storage:     b.storage(),
			Replicas:    b.cfg.Replicas,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  b.cfg.DuplicateWindow,
		},
		{
			Name:        StoredStream,
			Description: "The writer's notices of the accounts it stored events for, read by the detection services.",
			Subjects:    []string{"stored.>"},
			Storage:     b.storage(),
			Replicas:    b.cfg.Replicas,
			// A notice is a hint to recompute soon: the detection services'
			// scheduled sweep recomputes every account anyway, so an old
			// notice may go.
			MaxAge:   24 * time.Hour,
			MaxBytes: 1 << 30,
			Discard:  jetstream.DiscardOld,
		},
		{
			Name:        DeadLetterStream,
			Description: "Messages a consumer gave up on after its delivery limit, kept for inspection and replay.",
			Subjects:    []string{"deadletter.>"},
			Storage:     b.storage(),
			Replicas:    b.cfg.Replicas,
			MaxAge:      30 * 24 * time.Hour,
		},
		{
			Name:        AlertsStream,
			Description: "Every change to an alert, for watchers: a watcher resumes from the last sequence it saw.",
			Subjects:    []string{"alerts.>"},
			Storage:     b.storage(),
			Replicas:    b.cfg.Replicas,
			MaxAge:      7 * 24 * time.Hour,
			Duplicates:  b.cfg.DuplicateWindow,
		},
		{
			Name:        DeliveriesStream,
			Description: "Alert notifications owed to channels, each removed once delivered or dead-lettered.",
			Subjects:    []string{"deliveries.>"},
			Storage:     b.storage(),
			Replicas:    b.cfg.Replicas,
			Retention:   jetstream.WorkQueuePolicy,
			// The duplicate window drops a notification handed over twice
			// (a crash between the hand-over and clearing the outbox).
			Duplicates: b.cfg.DuplicateWindow,
		},
	}
}

// storage is where streams and buckets keep their messages.
func (b *Bus) storage() jetstream.StorageType {
	if b.cfg.MemoryStorage {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// EnsureStreams creates the streams, or updates them to these definitions.
func (b *Bus) EnsureStreams(ctx context.Context) error {
	for _, sc := range b.Streams() {
		replaced, err := b.replaceOldLayout(ctx, sc)
		if err != nil {
			return err
		}
		for attempt := 1; ; attempt++ {
			_, err := b.JS.CreateOrUpdateStream(ctx, sc)
			if err == nil {
				break
			}
			// Right after a delete the server can still be writing into
			// the old stream's folder, and creating one of the same name
			// then fails (seen once in a few hundred test runs); a moment
			// later it works.
			var apiErr *jetstream.APIError
			if !replaced || attempt == 20 || !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeStreamCreate {
				return fmt.Errorf("declare stream %s: %w", sc.Name, err)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return fmt.Errorf("declare stream %s: %w", sc.Name, ctx.Err())
			}
		}
	}
	return nil
}

// errCodeStreamCreate is JetStream's "error creating store for stream".
const errCodeStreamCreate jetstream.ErrorCode = 10049

// replaceOldLayout replaces a stream laid out differently from sc in a way
// JetStream can't change in place, or whose old messages no consumer of
// the new layout would read: a retention policy, or EVENTS from before it
// was partitioned (kept 7 days of events on events.<tenant>.<type>). The
// old stream is deleted only when each of its consumers has acknowledged
// everything, so no event that was not yet stored is lost.
func (b *Bus) replaceOldLayout(ctx context.Context, sc jetstream.StreamConfig) (replaced bool, _ error) {
	s, err := b.JS.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read stream %s: %w", sc.Name, err)
	}
	info := s.CachedInfo()
	if info.Config.Retention == sc.Retention && (sc.SubjectTransform == nil || info.Config.SubjectTransform != nil) {
		return false, nil
	}
	unprocessed := uint64(0)
	if info.State.Consumers == 0 {
		unprocessed = info.State.Msgs
	}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		unprocessed += ci.NumPending + uint64(ci.NumAckPending)
	}
	if err := lister.Err(); err != nil {
		return false, fmt.Errorf("read consumers of stream %s: %w", sc.Name, err)
	}
	if unprocessed > 0 {
		return false, fmt.Errorf("stream %s must be laid out anew, but holds %d messages its consumers have not processed: "+
			"run the previous version until they are (metric stickpoint_consumer_pending at 0), then start this one", sc.Name, unprocessed)
	}
	b.log.WarnContext(ctx, "replacing a stream laid out by an earlier version; all its messages were processed",
		"stream", sc.Name, "retention", info.Config.Retention.String(), "messages", info.State.Msgs)
	if err := b.JS.DeleteStream(ctx, sc.Name); err != nil {
		return false, fmt.Errorf("replace stream %s: %w", sc.Name, err)
	}
	return true, nil
}

// KeyValue creates or opens a KV bucket with the bus's replica count.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = b.cfg.Replicas
	cfg.Storage = b.storage()
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("declare kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
