package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names and subjects. Every subject carries the tenant.
const (
	// EventsStream holds usage events: events.<tenant>.<type>.
	EventsStream = "EVENTS"
	// SignalsStream holds derived signals: signals.<tenant>.<kind>.
	SignalsStream = "SIGNALS"
	// DeadLetterStream keeps what a consumer gave up on:
	// deadletter.<stream>.<consumer>.
	DeadLetterStream = "DEADLETTER"
)

// EventSubject is the subject of an event of type typ for tenant.
func EventSubject(tenant, typ string) string { return "events." + tenant + "." + typ }

// SignalSubject is the subject of a signal of kind for tenant.
func SignalSubject(tenant, kind string) string { return "signals." + tenant + "." + kind }

// DeadLetterSubject is where consumer durable of stream dead-letters.
func DeadLetterSubject(stream, durable string) string {
	return "deadletter." + stream + "." + durable
}

// Streams are the stream definitions every Stickpoint process agrees on.
func (b *Bus) Streams() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        EventsStream,
			Description: "Usage events from ingest; the writer moves them to ClickHouse.",
			Subjects:    []string{"events.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      7 * 24 * time.Hour,
			Duplicates:  b.cfg.DuplicateWindow,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        SignalsStream,
			Description: "Customer-success signals: milestones, health, cancel intent, churn.",
			Subjects:    []string{"signals.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  b.cfg.DuplicateWindow,
		},
		{
			Name:        DeadLetterStream,
			Description: "Messages a consumer gave up on after its delivery limit, kept for inspection and replay.",
			Subjects:    []string{"deadletter.>"},
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			MaxAge:      30 * 24 * time.Hour,
		},
	}
}

// EnsureStreams creates the streams, or updates them to these definitions.
func (b *Bus) EnsureStreams(ctx context.Context) error {
	for _, sc := range b.Streams() {
		if _, err := b.JS.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("declare stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// KeyValue creates or opens a KV bucket with the bus's replica count.
func (b *Bus) KeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	cfg.Replicas = b.cfg.Replicas
	cfg.Storage = jetstream.FileStorage
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("declare kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
