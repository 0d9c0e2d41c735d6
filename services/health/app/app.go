// Package app wires the health-scoring service: the scorer fed by the
// writer's stored notices and by milestone tracking's onboarding signals,
// the scheduled sweep, model rescoring, and the accounts and health APIs.
// The health binary and the embedded mode both use it.
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
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	healthv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/health/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/api"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
	"github.com/stickpoint/stickpoint/services/health/migrations"
)

// Component names the service's migrations.
const Component = "health"

// Migrations are the service's ClickHouse migrations.
var Migrations fs.FS = migrations.FS

// Durable consumers of the service.
const (
	ScorerDurable     = "health-scorer"
	OnboardingDurable = "health-onboarding"
	// RequestsDurable is the immediate path for cancellation requests: it
	// reads the events as they arrive on EVENTS, before the writer stores
	// them, and looks for requests only (see Scorer.SignalRequests).
	RequestsDurable = "health-requests"
)

// Config configures the health-scoring service.
type Config struct {
	// SweepInterval is how often the scored accounts that time can move
	// are rescored from the rollups (see scorer.Sweep).
	SweepInterval time.Duration `json:"sweep_interval"`
	// ScoreWait is how long the scorer collects notices before it scores
	// the accounts they name: the latency it adds.
	ScoreWait time.Duration `json:"score_wait"`
	// OwnerTrait is the account trait that names its owner (its CSM), for
	// tenants that set none (stickpoint tenants update --owner-trait).
	OwnerTrait string `json:"owner_trait"`
	// AccountsCache is how many accounts the accounts API's Get keeps in
	// memory, current with the writers (see api.Accounts.Follow); 0 reads
	// ClickHouse on every Get.
	AccountsCache int `json:"accounts_cache"`
}

// DefaultConfig sweeps every 5 minutes, scores notices within 100 ms,
// takes the owner from csm_email, and keeps 100,000 accounts in memory
// for Get (a few hundred MB at most).
func DefaultConfig() Config {
	return Config{SweepInterval: 5 * time.Minute, ScoreWait: 100 * time.Millisecond, OwnerTrait: "csm_email", AccountsCache: 100_000}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	switch {
	case c.SweepInterval < time.Second:
		return fmt.Errorf("health.sweep_interval: %v is under 1s", c.SweepInterval)
	case c.ScoreWait <= 0 || c.ScoreWait > 10*time.Second:
		return fmt.Errorf("health.score_wait: %v is not between 0 and 10s", c.ScoreWait)
	case c.OwnerTrait == "":
		return fmt.Errorf("health.owner_trait: required")
	case c.AccountsCache < 0:
		return fmt.Errorf("health.accounts_cache: %d is negative", c.AccountsCache)
	}
	return nil
}

// Service is the health-scoring service.
type Service struct {
	cfg        Config
	log        *slog.Logger
	reg        *tenancy.Registry
	Scorer     *scorer.Scorer
	notices    *natsjs.Consumer
	requests   *natsjs.Consumer
	onboarding *natsjs.Consumer
	accounts   *api.Accounts
	health     *api.Health
	models     *models.Store
	// memory is the scorer's store in a backtest (UseMemory), else nil.
	memory *scorer.Memory

	pending *service.Pending // rescores asked for (by tenant)
}

// New builds the service over a bus, a migrated store and the registry.
func New(ctx context.Context, cfg Config, bus *natsjs.Bus, db chstore.Store, reg *tenancy.Registry, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ms, err := models.Open(ctx, bus)
	if err != nil {
		return nil, err
	}
	sc, err := scorer.New(db, ms, signals.NewEmitter(bus, db), log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, reg: reg, Scorer: sc, models: ms, pending: service.NewPending()}
	sc.Changed = accounts.NewNotifier(bus.NC)
	s.accounts = api.NewAccounts(db, ms, ownerTrait(reg, cfg.OwnerTrait))
	if err := s.accounts.Follow(bus.NC, sc, cfg.AccountsCache, log.With("component", "accounts-api")); err != nil {
		return nil, err
	}
	s.health = api.NewHealth(db, ms, sc, s.RescoreAll)
	healthy := func(ctx context.Context) error { return db.Exec(ctx, "SELECT 1") }
	s.notices, err = natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
		Stream: natsjs.StoredStream, Durable: ScorerDurable, FilterSubjects: []string{"stored.>"},
		MaxBatch: 500, MaxWait: cfg.ScoreWait, AckWait: time.Minute, Healthy: healthy,
	}, s.handleNotices, log.With("component", ScorerDurable))
	if err != nil {
		return nil, err
	}
	s.requests, err = natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
		Stream: natsjs.EventsStream, Durable: RequestsDurable, FilterSubjects: []string{"events.*.*.track", "events.*.*.page", "events.*.*.screen"},
		MaxBatch: 200, MaxBatchBytes: 8 << 20, MaxWait: 20 * time.Millisecond, AckWait: time.Minute, Healthy: healthy,
	}, s.handleRequests, log.With("component", RequestsDurable))
	if err != nil {
		return nil, err
	}
	// An onboarding status change is an input to health: rescore.
	var onboardingSubjects []string
	for _, k := range OnboardingKinds {
		onboardingSubjects = append(onboardingSubjects, "signals.*."+k)
	}
	s.onboarding, err = natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
		Stream: natsjs.SignalsStream, Durable: OnboardingDurable, FilterSubjects: onboardingSubjects,
		MaxBatch: 500, MaxWait: cfg.ScoreWait, AckWait: time.Minute, Healthy: healthy,
	}, s.HandleOnboarding, log.With("component", OnboardingDurable))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// OnboardingKinds are the signals of an onboarding status change, which
// rescore the account.
var OnboardingKinds = []string{"onboarding_on_track", "onboarding_at_risk", "onboarding_late", "onboarding_stalled", "onboarding_completed"}

// ownerTrait is a tenant's owner trait, else the default.
func ownerTrait(reg *tenancy.Registry, def string) func(tenant string) string {
	return func(tenant string) string {
		if t, err := reg.Tenant(tenant); err == nil && t.OwnerTrait != "" {
			return t.OwnerTrait
		}
		return def
	}
}

// Register mounts the accounts and health APIs.
func (s *Service) Register(srv *grpcserver.Server) {
	srv.Register(&accountsv1.AccountsService_ServiceDesc, s.accounts)
	srv.Register(&healthv1.HealthService_ServiceDesc, s.health)
}

// handleNotices rescores the accounts a batch of notices names, per
// tenant, after rebuilding their rollups for the days stored.
//
// Under sustained load rounds run back to back, each rebuilding the same
// busy accounts' day; so after a round the scorer rests as long as the
// round took (at most 5 s). It then uses at most half a core, leaving the
// rest to ingest and to the immediate path for cancellation requests, and
// the next round takes in all the notices that came meanwhile. Idle, a
// round takes milliseconds and so does the rest.
func (s *Service) handleNotices(ctx context.Context, msgs []jetstream.Msg) error {
	began := time.Now()
	if err := s.ScoreNotices(ctx, msgs); err != nil {
		return err
	}
	rest := time.NewTimer(min(time.Since(began), 5*time.Second))
	defer rest.Stop()
	select {
	case <-rest.C:
	case <-ctx.Done():
	}
	return nil
}

// ScoreNotices rebuilds the rollups and rescores the accounts a batch of
// notices names, per tenant: the notices consumer's work, without its
// rest. A backtest calls it with the notices of each step.
func (s *Service) ScoreNotices(ctx context.Context, msgs []jetstream.Msg) error {
	for tenant, d := range dirtyOf(ctx, s.log, msgs) {
		if _, err := s.Scorer.Score(ctx, tenant, keys(d.accounts), d.span, "events"); err != nil {
			return fmt.Errorf("score %d accounts of %s: %w", len(d.accounts), tenant, err)
		}
	}
	return nil
}

// dirty is what a batch of notices names for one tenant.
type dirty struct {
	accounts map[string]bool
	span     scorer.Span
}

// dirtyOf merges a batch of notices by tenant.
func dirtyOf(ctx context.Context, log *slog.Logger, msgs []jetstream.Msg) map[string]*dirty {
	byTenant := map[string]*dirty{}
	for _, m := range msgs {
		n, err := events.DecodeStoredNotice(m.Data())
		if err != nil {
			log.WarnContext(ctx, "skipping a bad stored notice", "subject", m.Subject(), "error", err)
			continue
		}
		d := byTenant[n.TenantID]
		if d == nil {
			d = &dirty{accounts: map[string]bool{}, span: scorer.Span{From: n.From, To: n.To}}
			byTenant[n.TenantID] = d
		}
		for _, a := range n.Accounts {
			d.accounts[a] = true
		}
		if n.From.Before(d.span.From) {
			d.span.From = n.From
		}
		if n.To.After(d.span.To) {
			d.span.To = n.To
		}
	}
	return byTenant
}

// handleRequests signals the cancellation requests among arriving events.
func (s *Service) handleRequests(ctx context.Context, msgs []jetstream.Msg) error {
	byTenant := map[string][]events.Event{}
	for _, m := range msgs {
		evs, err := events.Decode(m.Data())
		if err != nil {
			s.log.WarnContext(ctx, "skipping an event message it can't read", "subject", m.Subject(), "error", err)
			continue
		}
		for _, e := range evs {
			byTenant[e.TenantID] = append(byTenant[e.TenantID], e)
		}
	}
	for tenant, evs := range byTenant {
		if _, err := s.Scorer.SignalRequests(ctx, tenant, evs); err != nil {
			return fmt.Errorf("cancellation requests of %s: %w", tenant, err)
		}
	}
	return nil
}

// HandleOnboarding rescores the accounts whose onboarding status changed:
// the onboarding signals consumer's handler.
func (s *Service) HandleOnboarding(ctx context.Context, msgs []jetstream.Msg) error {
	byTenant := map[string]map[string]bool{}
	for _, m := range msgs {
		sig, err := signals.Decode(m.Data())
		if err != nil {
			s.log.WarnContext(ctx, "skipping a bad signal", "subject", m.Subject(), "error", err)
			continue
		}
		if byTenant[sig.GetTenantId()] == nil {
			byTenant[sig.GetTenantId()] = map[string]bool{}
		}
		byTenant[sig.GetTenantId()][sig.GetAccountId()] = true
	}
	for tenant, ids := range byTenant {
		if _, err := s.Scorer.Score(ctx, tenant, keys(ids), scorer.Span{}, "onboarding"); err != nil {
			return fmt.Errorf("score %d accounts of %s: %w", len(ids), tenant, err)
		}
	}
	return nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// PutModel puts a tenant's health model, as `stickpoint health model put`
// does, without the rescore a put queues: a backtest puts it before any
// event.
func (s *Service) PutModel(ctx context.Context, tenant string, src []byte) error {
	st, _, err := s.models.Put(ctx, tenant, src)
	if err != nil {
		return err
	}
	return s.models.Await(ctx, tenant, st.Version)
}

// UseMemory makes the scorer read its accounts from h, the signals
// emitted from sigs (where its own go) and their onboarding statuses with
// onboarding, keeping their scores and churns in memory (a backtest: no
// query per step of its clock). Scored then lists them.
func (s *Service) UseMemory(h *accounts.History, sigs *signals.Memory, onboarding func(tenant string, ids []string) map[string]string) {
	s.memory = s.Scorer.UseMemory(h, sigs, onboarding)
}

// SaveMemory stores what UseMemory kept in memory in ClickHouse: a
// backtest whose data folder is kept.
func (s *Service) SaveMemory(ctx context.Context) error { return s.Scorer.SaveMemory(ctx) }

// Scored is an account as a backtest's scoring left it: its fit, and its
// first churn, with the reason recorded.
type Scored struct {
	AccountID, Fit string
	Churned        bool
	ChurnedAt      time.Time
	ChurnReason    string
}

// Scored lists the tenant's scored accounts, in order, after UseMemory.
func (s *Service) Scored(tenant string) []Scored {
	if s.memory == nil {
		return nil
	}
	var out []Scored
	for _, k := range s.memory.Kept(tenant) {
		sc := Scored{AccountID: k.AccountID, Fit: k.Fit}
		if k.Churn != nil {
			sc.Churned, sc.ChurnedAt, sc.ChurnReason = true, k.Churn.At, k.Churn.Reason
		}
		out = append(out, sc)
	}
	return out
}

// SetClock sets the clock the scorer judges by: a backtest's simulated
// one.
func (s *Service) SetClock(now func() time.Time) { s.Scorer.Now = now }

// RescoreAll queues a rescore of every account of tenant; Run carries it
// out. Rescores asked for while one runs are merged into one.
func (s *Service) RescoreAll(tenant, reason string) {
	s.pending.Add(tenant, reason)
}

// Run consumes the notices and signals, runs the sweep on schedule and the
// rescores asked for, until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.notices.Run(gctx) })
	g.Go(func() error { return s.onboarding.Run(gctx) })
	g.Go(func() error { return s.requests.Run(gctx) })
	g.Go(func() error { s.accounts.Run(gctx); return nil })
	g.Go(func() error {
		s.backfill(gctx)
		sweep := time.NewTicker(s.cfg.SweepInterval)
		defer sweep.Stop()
		for {
			select {
			case <-sweep.C:
				_ = s.Sweep(gctx) // logged; the next one retries
			case <-s.pending.Wake():
				s.runRescores(gctx)
			case <-gctx.Done():
				return nil
			}
		}
	})
	return g.Wait()
}

// Sweep rescores the scored accounts of every tenant that time can have
// moved, from the rollups: decay, expiry and moving windows. Run calls it every sweep_interval. A
// failure is logged and returned (Run goes on: the next sweep retries).
func (s *Service) Sweep(ctx context.Context) error {
	var tenants []string
	for _, t := range s.reg.Tenants() {
		tenants = append(tenants, t.ID)
	}
	began := time.Now()
	r, err := s.Scorer.Sweep(ctx, tenants)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "health sweep failed; the next one retries", "error", err)
		return err
	}
	s.log.DebugContext(ctx, "health sweep done", "accounts", r.Accounts, "changed", r.Changed, "signals", r.Signals, "took_ms", time.Since(began).Milliseconds())
	return err
}

// backfill builds the rollups of each tenant that has events but none,
// and scores its accounts: events stored before the service first ran.
func (s *Service) backfill(ctx context.Context) {
	for _, t := range s.reg.Tenants() {
		began := time.Now()
		ran, err := s.Scorer.Backfill(ctx, t.ID)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.WarnContext(ctx, "health backfill failed; the next start retries", "tenant", t.ID, "error", err)
		case ran:
			s.log.InfoContext(ctx, "built the usage rollups of events stored before health scoring ran, and scored the accounts", "tenant", t.ID, "took_ms", time.Since(began).Milliseconds())
		}
	}
}

func (s *Service) runRescores(ctx context.Context) {
	for {
		tenant, reason, ok := s.pending.Next()
		if !ok || ctx.Err() != nil {
			return
		}
		began := time.Now()
		r, err := s.Scorer.RescoreAll(ctx, tenant, "model")
		if err != nil {
			s.log.WarnContext(ctx, "rescore failed; put the model again to retry", "tenant", tenant, "reason", reason, "error", err)
			continue
		}
		s.log.InfoContext(ctx, "rescored every account", "tenant", tenant, "reason", reason, "accounts", r.Accounts, "signals", r.Signals, "took_ms", time.Since(began).Milliseconds())
	}
}

// Ready reports whether the scorer is consuming notices.
func (s *Service) Ready(context.Context) error {
	if err := s.notices.Err(); err != nil {
		return fmt.Errorf("health scorer: %w", err)
	}
	if err := s.requests.Err(); err != nil {
		return fmt.Errorf("health cancellation requests: %w", err)
	}
	return s.onboarding.Err()
}

// Flush has nothing to write: every score is stored as it is made.
func (s *Service) Flush(context.Context) error { return nil }

// ModelTemplate is the commented default model, for `stickpoint health
// model get` before any put.
const ModelTemplate = model.Template
