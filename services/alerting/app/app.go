// Package app wires the alerting service: the alerter fed by the SIGNALS
// stream, the sweep that escalates and re-sends, the dispatcher that
// delivers, and the alerts API. The alerting binary and the embedded mode
// both use it.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/specstore"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/alerter"
	"github.com/stickpoint/stickpoint/services/alerting/internal/api"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
	"github.com/stickpoint/stickpoint/services/alerting/internal/delivery"
	"github.com/stickpoint/stickpoint/services/alerting/internal/store"
)

// SignalsDurable is the alerter's consumer of SIGNALS.
const SignalsDurable = "alerting-signals"

// ConfigBucket is the key-value bucket of alerting configurations.
const ConfigBucket = "alerting_configs"

// ConfigTemplate is the commented default configuration.
const ConfigTemplate = config.Template

// Config configures the alerting service.
type Config struct {
	// SweepInterval is how often alerts are checked for escalation (and
	// for notifications a crash left unsent).
	SweepInterval time.Duration `json:"sweep_interval"`
	// AccountURL is the link to an account in alerts, with {account_id},
	// for tenants whose configuration sets no account_url.
	AccountURL string          `json:"account_url"`
	Delivery   delivery.Config `json:"delivery"`
}

// DefaultConfig sweeps every 30 s and links accounts to nowhere until set.
func DefaultConfig() Config {
	return Config{SweepInterval: 30 * time.Second, Delivery: delivery.DefaultConfig()}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if c.SweepInterval < time.Second {
		return fmt.Errorf("alerting.sweep_interval: %v is under 1s", c.SweepInterval)
	}
	return c.Delivery.Validate()
}

// Service is the alerting service.
type Service struct {
	cfg        Config
	log        *slog.Logger
	Alerter    *alerter.Alerter
	API        *api.Alerts
	alerts     *store.Store
	configs    *specstore.Store[config.Config]
	dispatcher *delivery.Dispatcher
	signals    *natsjs.Consumer
	swept      atomic.Bool
}

// OpenConfigs opens the configurations' bucket.
func OpenConfigs(ctx context.Context, bus *natsjs.Bus) (*specstore.Store[config.Config], error) {
	return specstore.Open(ctx, bus, specstore.Kind[config.Config]{
		Bucket: ConfigBucket, What: "alerting configuration",
		Description: "Stickpoint alerting configurations: each tenant's channels, rules and escalation, as put.",
		Parse:       config.Parse, Template: config.Template, Default: config.Default(),
		Prepare: func(cur specstore.Stored[config.Config], src []byte) ([]byte, error) {
			return config.KeepSecrets(cur.Spec, src)
		},
	})
}

// New builds the service over a bus.
func New(ctx context.Context, cfg Config, bus *natsjs.Bus, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	alerts, err := store.Open(ctx, bus)
	if err != nil {
		return nil, err
	}
	configs, err := OpenConfigs(ctx, bus)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, API: api.New(bus, alerts, configs), alerts: alerts, configs: configs}
	if s.Alerter, err = alerter.New(alerts, configs, cfg.AccountURL, log); err != nil {
		return nil, err
	}
	if s.dispatcher, err = delivery.NewDispatcher(cfg.Delivery, bus, alerts, configs, delivery.NewSender(), log.With("component", delivery.Durable)); err != nil {
		return nil, err
	}
	s.signals, err = natsjs.NewConsumer(bus, natsjs.ConsumerConfig{
		Stream: natsjs.SignalsStream, Durable: SignalsDurable, FilterSubjects: []string{"signals.>"},
		// Signals are applied one by one with a few key-value round trips
		// each; small batches keep one signal's alert from waiting long.
		MaxBatch: 100, MaxWait: 5 * time.Millisecond, AckWait: time.Minute,
		// The alerts live in the key-value store: while it can't be
		// reached, every signal waits for it, and none is dead-lettered.
		Healthy: alerts.Healthy,
	}, s.Alerter.Handle, log.With("component", SignalsDurable))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// ChangeHeader is the header of an ALERTS message that names the change:
// opened, updated, reopened, auto_resolved, escalated, ...
const ChangeHeader = store.HeaderChange

// PutConfig puts a tenant's alerting configuration, as `stickpoint
// alerting put` does.
func (s *Service) PutConfig(ctx context.Context, tenant string, src []byte) error {
	st, _, err := s.configs.Put(ctx, tenant, src)
	if err != nil {
		return err
	}
	return s.configs.Await(ctx, tenant, st.Version)
}

// SetClock sets the clock alerts are opened, resolved and escalated by: a
// backtest's simulated one.
func (s *Service) SetClock(now func() time.Time) { s.Alerter.Now = now }

// UseMemory keeps the alerts in memory, not in the key-value bucket: a
// backtest, before it applies any signal. What they announce and deliver
// still goes to the ALERTS and DELIVERIES streams.
func (s *Service) UseMemory() { s.alerts.UseMemory() }

// SaveMemory writes the alerts UseMemory kept to the bucket: a backtest
// whose data folder is kept.
func (s *Service) SaveMemory(ctx context.Context) error { return s.alerts.SaveMemory(ctx) }

// Register serves the alerts API on srv.
func (s *Service) Register(srv *grpcserver.Server) {
	srv.Register(&alertsv1.AlertsService_ServiceDesc, s.API)
}

// Run runs the consumer, the dispatcher and the sweep until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.signals.Run(gctx) })
	g.Go(func() error { return s.dispatcher.Run(gctx) })
	g.Go(func() error {
		t := time.NewTicker(s.cfg.SweepInterval)
		defer t.Stop()
		for {
			s.sweep(gctx)
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	return g.Wait()
}

func (s *Service) sweep(ctx context.Context) {
	n, err := s.Alerter.Sweep(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "alert sweep failed; the next one retries", "error", err)
		return
	}
	s.swept.Store(true)
	if n > 0 {
		s.log.InfoContext(ctx, "escalated alerts nobody acknowledged", "alerts", n)
	}
}

// Ready reports whether the alerter is consuming signals.
func (s *Service) Ready(context.Context) error {
	if err := s.signals.Err(); err != nil {
		return fmt.Errorf("alerting signals: %w", err)
	}
	return nil
}

// Flush has nothing to write: every change is stored as it is made.
func (s *Service) Flush(context.Context) error { return nil }
