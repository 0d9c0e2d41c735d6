// Package app wires the milestone-tracking service: the evaluator fed by
// the writer's stored notices, the scheduled sweep, journey backfills, and
// the milestones, accounts and signals APIs. The milestones binary and
// the embedded mode both use it.
package app

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	milestonesv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/milestones/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/milestones/internal/api"
	"github.com/stickpoint/stickpoint/services/milestones/internal/evaluator"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/migrations"
)

// Component names the service's migrations.
const Component = "milestones"

// Migrations are the service's ClickHouse migrations.
var Migrations fs.FS = migrations.FS

// EvaluatorDurable is the consumer of the writer's notices.
const EvaluatorDurable = "milestones-evaluator"

// Config configures the milestone-tracking service.
type Config struct {
	// SweepInterval is how often every account with a journey is
	// re-evaluated, so that time alone moves it to at risk, late or
	// stalled.
	SweepInterval time.Duration `json:"sweep_interval"`
	// EvaluateWait is how long the evaluator collects notices before it
	// evaluates the accounts they name: the signal latency it adds.
	EvaluateWait time.Duration `json:"evaluate_wait"`
	// ReconcileInterval is how often the accounts with events received
	// since the last time are evaluated again: the net under a stored
	// notice the writer failed to publish.
	ReconcileInterval time.Duration `json:"reconcile_interval"`
}

// DefaultConfig sweeps every minute, evaluates notices within 100 ms,
// and reconciles hourly.
func DefaultConfig() Config {
	return Config{SweepInterval: time.Minute, EvaluateWait: 100 * time.Millisecond, ReconcileInterval: time.Hour}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	switch {
	case c.SweepInterval < time.Second:
		return fmt.Errorf("milestones.sweep_interval: %v is under 1s", c.SweepInterval)
	case c.EvaluateWait <= 0 || c.EvaluateWait > 10*time.Second:
		return fmt.Errorf("milestones.evaluate_wait: %v is not between 0 and 10s", c.EvaluateWait)
	case c.ReconcileInterval < time.Minute:
		return fmt.Errorf("milestones.reconcile_interval: %v is under 1m", c.ReconcileInterval)
	}
	return nil
}

// Service is the milestone-tracking service.
type Service struct {
	cfg       Config
	log       *slog.Logger
	reg       *tenancy.Registry
	Evaluator *evaluator.Evaluator
	notices   *natsjs.Consumer
	api       *api.Milestones
	journeys  *journeys.Store
	signals   *signals.Server

	pending *service.Pending // backfills asked for (by tenant)
}

// New builds the service over a bus, a migrated store and the registry.
func New(ctx context.Context, cfg Config, bus *natsjs.Bus, db chstore.Store, reg *tenancy.Registry, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := journeys.Open(ctx, bus)
	if err != nil {
		return nil, err
	}
	eval, err := evaluator.New(db, js, signals.NewEmitter(bus, db), log)
	if err != nil {
		return nil, err
	}
	eval.Changed = accounts.NewNotifier(bus.NC)
	s := &Service{cfg: cfg, log: log, reg: reg, Evaluator: eval, journeys: js, signals: signals.NewServer(db),
		pending: service.NewPending()}
	s.api = api.NewMilestones(db, js, eval, s.StartBackfill)
	s.notices, err = natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
		Stream:         natsjs.StoredStream,
		Durable:        EvaluatorDurable,
		FilterSubjects: []string{"stored.>"},
		MaxBatch:       500,
		MaxWait:        cfg.EvaluateWait,
		AckWait:        time.Minute,
		Healthy:        func(ctx context.Context) error { return db.Exec(ctx, "SELECT 1") },
	}, s.HandleNotices, log.With("component", "milestones-evaluator"))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Register mounts the milestones and signals APIs. (The accounts API is
// the health-scoring service's: it adds health to every account.)
func (s *Service) Register(srv *grpcserver.Server) {
	srv.Register(&milestonesv1.MilestonesService_ServiceDesc, s.api)
	srv.Register(&signalsv1.SignalsService_ServiceDesc, s.signals)
}

// HandleNotices evaluates the accounts a batch of notices names, per
// tenant; the notices are acked once the new states are stored. It is the
// notices consumer's handler; a backtest calls it with the notices of
// each step.
func (s *Service) HandleNotices(ctx context.Context, msgs []jetstream.Msg) error {
	type dirty struct {
		accounts map[string]bool
		since    time.Time // the earliest event time stored
	}
	byTenant := map[string]*dirty{}
	for _, m := range msgs {
		n, err := events.DecodeStoredNotice(m.Data())
		if err != nil {
			s.log.WarnContext(ctx, "skipping a bad stored notice", "subject", m.Subject(), "error", err)
			continue
		}
		d := byTenant[n.TenantID]
		if d == nil {
			d = &dirty{accounts: map[string]bool{}, since: n.From}
			byTenant[n.TenantID] = d
		}
		for _, a := range n.Accounts {
			d.accounts[a] = true
		}
		if n.From.Before(d.since) {
			d.since = n.From
		}
	}
	for tenant, d := range byTenant {
		ids := make([]string, 0, len(d.accounts))
		for a := range d.accounts {
			ids = append(ids, a)
		}
		if _, err := s.Evaluator.Evaluate(ctx, tenant, ids, "events", d.since); err != nil {
			return fmt.Errorf("evaluate %d accounts of %s: %w", len(ids), tenant, err)
		}
	}
	return nil
}

// PutJourneys puts each journey of a file (YAML documents apart by
// "---"), as `stickpoint journeys put` does, without the backfill a put
// queues: a backtest puts its journeys before any event.
func (s *Service) PutJourneys(ctx context.Context, tenant string, src []byte) error {
	for i, doc := range specfile.Documents(src) {
		if _, _, err := s.journeys.Put(ctx, tenant, doc.Source); err != nil {
			return fmt.Errorf("journey %d (line %d): %w", i+1, doc.Line, err)
		}
	}
	return nil
}

// UseMemory makes the evaluator read its accounts from h, keep their
// evaluations in memory and record its signals in sigs (a backtest: no
// query per step of its clock). It returns what reads their onboarding
// statuses, for health scoring.
func (s *Service) UseMemory(h *accounts.History, sigs *signals.Memory) (statuses func(tenant string, ids []string) map[string]string) {
	return s.Evaluator.UseMemory(h, sigs).Statuses
}

// SaveMemory stores what UseMemory kept in memory in ClickHouse: a
// backtest whose data folder is kept.
func (s *Service) SaveMemory(ctx context.Context) error { return s.Evaluator.SaveMemory(ctx) }

// SetClock sets the clock the evaluator judges by: a backtest's
// simulated one.
func (s *Service) SetClock(now func() time.Time) { s.Evaluator.Now = now }

// StartBackfill queues a recompute of all of tenant's accounts; Run
// carries it out. Backfills asked for while one runs are merged into one.
func (s *Service) StartBackfill(tenant, reason string) {
	s.pending.Add(tenant, reason)
}

// Run consumes the notices, runs the sweep on schedule and the backfills
// asked for, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.notices.Run(gctx) })
	g.Go(func() error {
		sweep := time.NewTicker(s.cfg.SweepInterval)
		defer sweep.Stop()
		reconcile := time.NewTicker(s.cfg.ReconcileInterval)
		defer reconcile.Stop()
		// A notice lost just before this process started is covered too.
		reconciled := time.Now().Add(-s.cfg.ReconcileInterval)
		for {
			select {
			case <-sweep.C:
				_ = s.Sweep(gctx) // logged; the next one retries
			case <-reconcile.C:
				if s.reconcile(gctx, reconciled.Add(-5*time.Minute)) {
					reconciled = time.Now()
				}
			case <-s.pending.Wake():
				s.runBackfills(gctx)
			case <-gctx.Done():
				return nil
			}
		}
	})
	return g.Wait()
}

// Sweep moves every tenant's accounts on by the clock alone (at risk,
// late, stalled); Run calls it every sweep_interval. A failure is logged
// and returned (Run goes on: the next sweep retries).
func (s *Service) Sweep(ctx context.Context) error {
	var tenants []string
	for _, t := range s.reg.Tenants() {
		tenants = append(tenants, t.ID)
	}
	began := time.Now()
	r, err := s.Evaluator.Sweep(ctx, tenants)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "sweep failed; the next one retries", "error", err)
		return err
	}
	s.log.DebugContext(ctx, "sweep done", "accounts", r.Accounts, "changed", r.Changed, "signals", r.Signals, "took_ms", time.Since(began).Milliseconds())
	return err
}

// reconcile evaluates every tenant's accounts with events received since,
// and reports whether it got through them all.
func (s *Service) reconcile(ctx context.Context, since time.Time) bool {
	for _, t := range s.reg.Tenants() {
		r, err := s.Evaluator.Reconcile(ctx, t.ID, since)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WarnContext(ctx, "reconcile failed; the next one retries", "tenant", t.ID, "error", err)
			}
			return false
		}
		if r.Changed > 0 {
			s.log.InfoContext(ctx, "reconcile changed accounts no notice had named", "tenant", t.ID, "changed", r.Changed, "signals", r.Signals)
		}
	}
	return true
}

func (s *Service) runBackfills(ctx context.Context) {
	for {
		tenant, reason, ok := s.pending.Next()
		if !ok || ctx.Err() != nil {
			return
		}
		_, _ = s.Evaluator.RunBackfill(ctx, tenant, reason)
	}
}

// Ready reports whether the evaluator is consuming notices.
func (s *Service) Ready(context.Context) error {
	if err := s.notices.Err(); err != nil {
		return fmt.Errorf("milestones evaluator: %w", err)
	}
	return nil
}

// Flush has nothing to write: every state is stored as it is evaluated.
func (s *Service) Flush(context.Context) error { return nil }

// JourneyTemplate is a commented example journey file, for
// `stickpoint journeys template`.
const JourneyTemplate = journey.Template
