// Package app wires the ingest service: the Segment-compatible HTTP API,
// the events gRPC API and the writer that moves events from JetStream into
// ClickHouse. The ingest binary and `stickpoint dev` both build it with New.
package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	ingestv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/ingest/v1"
	"github.com/stickpoint/stickpoint/services/ingest/internal/eventsapi"
	"github.com/stickpoint/stickpoint/services/ingest/internal/grpcapi"
	"github.com/stickpoint/stickpoint/services/ingest/internal/httpapi"
	"github.com/stickpoint/stickpoint/services/ingest/internal/intake"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
	"github.com/stickpoint/stickpoint/services/ingest/internal/writer"
	"github.com/stickpoint/stickpoint/services/ingest/migrations"
)

// Component names the ingest tables' migrations.
const Component = "ingest"

// Migrations are the ingest service's ClickHouse migrations.
var Migrations fs.FS = migrations.FS

// Config configures ingest.
type Config struct {
	HTTP   httpapi.Config `json:"http"`
	Writer WriterConfig   `json:"writer"`
	// StatsFlushInterval is how often refused-request counts are stored
	// for the per-tenant stats (events.v1 Stats).
	StatsFlushInterval time.Duration `json:"stats_flush_interval"`
}

// WriterConfig configures the JetStream -> ClickHouse writer.
type WriterConfig struct {
	// Enabled runs the writer in this process. Turn it off to run the
	// writer in processes of its own that scale apart from the API.
	Enabled bool `json:"enabled"`
	// MaxBatch is the most messages (each up to a request's events) per insert.
	MaxBatch int `json:"max_batch"`
	// MaxBatchBytes closes an insert's batch at this many message bytes, and
	// bounds what the writer fetches ahead: its memory follows it.
	MaxBatchBytes int `json:"max_batch_bytes"`
	// MaxWait is how long a partial batch waits before it is written.
	MaxWait time.Duration `json:"max_wait"`
	// MaxDeliver is how many failed deliveries a message gets before it
	// goes to the DEADLETTER stream (never while ClickHouse is down).
	MaxDeliver int `json:"max_deliver"`
	// AckWait is how long JetStream waits for a batch's ack before it
	// redelivers it, e.g. after a writer crash, and how long a standby
	// writer waits before it takes over a partition. A batch gets half of
	// it for its inserts.
	AckWait time.Duration `json:"ack_wait"`
	// DedupHorizon is how long a stored messageId is remembered: an event
	// sent again within it is not stored again, however it is batched.
	DedupHorizon time.Duration `json:"dedup_horizon"`
}

// DefaultConfig is Segment's limits and a writer batching up to 200
// messages or 250 ms.
func DefaultConfig() Config {
	return Config{HTTP: httpapi.DefaultConfig(),
		Writer: WriterConfig{Enabled: true, MaxBatch: 200, MaxBatchBytes: 32 << 20, MaxWait: 250 * time.Millisecond, MaxDeliver: 10,
			AckWait: 30 * time.Second, DedupHorizon: 24 * time.Hour},
		StatsFlushInterval: 10 * time.Second}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if err := c.HTTP.Validate(); err != nil {
		return fmt.Errorf("ingest.http.%w", err)
	}
	if c.Writer.MaxBatch < 1 || c.Writer.MaxBatch > 500 {
		return fmt.Errorf("ingest.writer.max_batch: %d is not between 1 and 500 (JetStream's MaxAckPending must stay above it)", c.Writer.MaxBatch)
	}
	if c.Writer.MaxBatchBytes < 1<<20 {
		return fmt.Errorf("ingest.writer.max_batch_bytes: %d is below 1 MiB; it must exceed the largest message (ingest publishes up to 900 KiB)", c.Writer.MaxBatchBytes)
	}
	if c.Writer.MaxWait <= 0 {
		return fmt.Errorf("ingest.writer.max_wait: must be positive")
	}
	if c.StatsFlushInterval < 10*time.Millisecond {
		return fmt.Errorf("ingest.stats_flush_interval: %v is too short", c.StatsFlushInterval)
	}
	if c.Writer.AckWait < time.Second {
		return fmt.Errorf("ingest.writer.ack_wait: %v is under 1s", c.Writer.AckWait)
	}
	if c.Writer.MaxDeliver < 1 {
		return fmt.Errorf("ingest.writer.max_deliver: must be at least 1")
	}
	if c.Writer.DedupHorizon < time.Minute {
		return fmt.Errorf("ingest.writer.dedup_horizon: %v is under 1m", c.Writer.DedupHorizon)
	}
	return nil
}

// Service is ingest's parts.
type Service struct {
	cfg     Config
	http    *httpapi.Handler
	events  *eventsapi.Server
	ingest  *grpcapi.Server
	intake  *intake.Intake
	store   *store.Store
	memory  *store.Memory // the writer's, in a backtest (UseMemory)
	log     *slog.Logger
	bus     *natsjs.Bus
	writer  *writer.Writer
	writers []*natsjs.Consumer // one per EVENTS partition
}

// WriterDurable is the name of partition p's writer consumer. Writer
// replicas share it; one at a time consumes (it is pinned).
func WriterDurable(p int) string { return "ingest-writer-" + strconv.Itoa(p) }

// New builds ingest over a bus, a migrated store and the tenancy registry.
func New(cfg Config, bus *natsjs.Bus, db chstore.Store, reg *tenancy.Registry, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st := store.New(db)
	inflight := cfg.HTTP.CoalesceInflight
	if inflight == 0 {
		inflight = intake.DefaultInflight(bus.FsyncsEveryWrite())
	}
	in, err := intake.New(bus.JS, intake.Config{RatePerSecond: cfg.HTTP.RatePerSecond, RateBurst: cfg.HTTP.RateBurst,
		PublishTimeout: cfg.HTTP.PublishTimeout, CoalesceWait: cfg.HTTP.CoalesceWait, CoalesceInflight: inflight, MaxInflightBytes: cfg.HTTP.MaxInflightBytes, AdmitWait: cfg.HTTP.AdmitWait,
		TenantInflightShare: cfg.HTTP.TenantInflightShare},
		log.With("component", "ingest"))
	if err != nil {
		return nil, err
	}
	h, err := httpapi.New(cfg.HTTP, reg, in, log.With("component", "ingest-http"))
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, http: h, events: eventsapi.New(st), ingest: grpcapi.New(cfg.HTTP.Limits, in),
		intake: in, store: st, log: log, bus: bus}
	if !cfg.Writer.Enabled {
		return s, nil
	}
	partitions := bus.Config().EventPartitions
	wlog := log.With("component", "ingest-writer")
	if s.writer, err = writer.New(st, writer.Config{Horizon: cfg.Writer.DedupHorizon, AckWait: cfg.Writer.AckWait, Partitions: partitions}, wlog); err != nil {
		return nil, err
	}
	s.writer.AfterWrite = failpoint(log)
	s.writer.Notify = func(ctx context.Context, notices []events.StoredNotice) error {
		return publishNotices(ctx, bus, notices)
	}
	for p := range partitions {
		c, err := natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
			Stream:         natsjs.EventsStream,
			Durable:        WriterDurable(p),
			FilterSubjects: []string{natsjs.EventPartitionFilter(p)},
			MaxBatch:       cfg.Writer.MaxBatch,
			MaxBatchBytes:  cfg.Writer.MaxBatchBytes,
			MaxWait:        cfg.Writer.MaxWait,
			MaxDeliver:     cfg.Writer.MaxDeliver,
			AckWait:        cfg.Writer.AckWait,
			Pinned:         true,
			PurgeAcked:     true,
			Healthy: func(ctx context.Context) error {
				return db.Exec(ctx, "SELECT 1")
			},
		}, s.writer.Handler(p), wlog.With("partition", p))
		if err != nil {
			return nil, err
		}
		s.writers = append(s.writers, c)
	}
	return s, nil
}

// maxNoticeAccounts keeps a notice well under NATS's 1 MiB payload limit.
const maxNoticeAccounts = 2000

// publishNotices publishes each tenant's notice on stored.<tenant>, in
// parts of at most maxNoticeAccounts accounts.
func publishNotices(ctx context.Context, bus *natsjs.Bus, notices []events.StoredNotice) error {
	for _, n := range notices {
		for accounts := range slices.Chunk(n.Accounts, maxNoticeAccounts) {
			part := n
			part.Accounts = accounts
			data, err := json.Marshal(part)
			if err != nil {
				return err
			}
			if err := bus.Publish(ctx, natsjs.StoredSubject(n.TenantID), data, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// Ready reports whether every writer partition is consuming.
func (s *Service) Ready(context.Context) error {
	for _, c := range s.writers {
		if err := c.Err(); err != nil {
			return fmt.Errorf("ingest writer: %w", err)
		}
	}
	return nil
}

// Register mounts the HTTP API on mux, and the events and ingest APIs on srv.
func (s *Service) Register(mux *http.ServeMux, srv *grpcserver.Server) {
	s.http.Register(mux)
	srv.Register(&eventsv1.EventsService_ServiceDesc, s.events)
	srv.Register(&ingestv1.IngestService_ServiceDesc, s.ingest)
}

// Run runs the writer and the stats flusher until ctx is cancelled, then
// drains the writer. If a writer partition stops for good, Run returns its
// error and the process exits. Flush writes the last stats.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		t := time.NewTicker(s.cfg.StatsFlushInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.flushRejections(gctx)
			case <-gctx.Done():
				return nil
			}
		}
	})
	if s.writer != nil {
		if err := s.checkPartitions(ctx); err != nil {
			if ctx.Err() != nil {
				return g.Wait()
			}
			return err
		}
		if err := s.loadWriter(ctx); err != nil {
			return g.Wait() // stopped while loading
		}
		for _, c := range s.writers {
			g.Go(func() error { return c.Run(gctx) })
		}
		g.Go(func() error {
			t := time.NewTicker(time.Hour)
			defer t.Stop()
			for {
				if err := s.writer.Maintain(gctx); err != nil && gctx.Err() == nil {
					s.log.WarnContext(gctx, "dedup maintenance", "error", err)
				}
				select {
				case <-t.C:
				case <-gctx.Done():
					return nil
				}
			}
		})
	}
	return g.Wait()
}

// loadWriter loads the writer's dedup filter, retrying while ClickHouse
// is unavailable (events wait in JetStream meanwhile, and readiness says
// the writer is not consuming). It fails only when ctx ends.
func (s *Service) loadWriter(ctx context.Context) error {
	delay := natsjs.ExponentialDelay(time.Second, 30*time.Second)
	for attempt := uint64(1); ; attempt++ {
		err := s.writer.Load(ctx)
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.WarnContext(ctx, "load the writer's dedup filter; retrying", "attempt", attempt, "error", err)
		select {
		case <-time.After(delay(attempt)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkPartitions refuses to start when a writer consumer of a partition
// beyond nats.event_partitions still holds events: they were filed under
// a larger partition count and no writer would consume them.
func (s *Service) checkPartitions(ctx context.Context) error {
	stream, err := s.bus.JS.Stream(ctx, natsjs.EventsStream)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", natsjs.EventsStream, err)
	}
	lister := stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		p, err := strconv.Atoi(strings.TrimPrefix(ci.Name, "ingest-writer-"))
		if err != nil || p < len(s.writers) {
			continue
		}
		if left := ci.NumPending + uint64(ci.NumAckPending); left > 0 {
			return fmt.Errorf("nats.event_partitions: consumer %s still holds %d events filed under partition %d, beyond the %d partitions configured: "+
				"set nats.event_partitions back until it is drained", ci.Name, left, p, len(s.writers))
		}
	}
	return lister.Err()
}

// Flush stores the refused-request counts not yet stored: run it after the
// servers stopped, so none is counted after it.
func (s *Service) Flush(ctx context.Context) error {
	s.flushRejections(ctx)
	return nil
}

func (s *Service) flushRejections(ctx context.Context) {
	s.flushWarnings(ctx)
	counts := s.intake.TakeRejections()
	if len(counts) == 0 {
		return
	}
	rows := make([][]any, 0, len(counts))
	for k, n := range counts {
		rows = append(rows, []any{k.Tenant, k.Minute, k.API, k.Reason, n})
	}
	if err := s.store.AddRejections(ctx, rows); err != nil {
		s.intake.PutBackRejections(counts) // try again next time
		s.log.WarnContext(ctx, "store ingest rejection counts", "error", err)
	}
}

func (s *Service) flushWarnings(ctx context.Context) {
	counts, samples := s.intake.TakeWarnings()
	if len(counts) == 0 && len(samples) == 0 {
		return
	}
	rows := make([][]any, 0, len(counts))
	for k, n := range counts {
		rows = append(rows, []any{k.Tenant, k.Minute, k.API, k.Code, k.Field, n})
	}
	examples := make([][]any, 0, len(samples))
	for k, e := range samples {
		examples = append(examples, []any{k.Tenant, k.API, k.Code, k.Field, e.Seen, e.Message, e.Call})
	}
	// Examples first: a count is never visible without its example, and
	// an example stored twice (after a failed count insert) is one row.
	if err := s.store.AddWarningExamples(ctx, examples); err != nil {
		s.intake.PutBackWarnings(counts, samples) // try again next time
		s.log.WarnContext(ctx, "store ingest warning examples", "error", err)
		return
	}
	if err := s.store.AddWarnings(ctx, rows); err != nil {
		s.intake.PutBackWarnings(counts, samples)
		s.log.WarnContext(ctx, "store ingest warnings", "error", err)
	}
}
