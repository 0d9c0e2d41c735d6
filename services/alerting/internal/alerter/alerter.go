// Package alerter turns signals into alerts: it applies each signal from
// the SIGNALS stream to the alert it concerns under the tenant's rules,
// resolves the alerts a clearing signal ends, and sweeps the stored alerts
// for escalations and for notifications a crash left unsent.
package alerter

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/specstore"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
	"github.com/stickpoint/stickpoint/services/alerting/internal/store"
)

// Alerter applies signals and sweeps alerts.
type Alerter struct {
	alerts  *store.Store
	configs *specstore.Store[config.Config]
	// LinkTemplate is the account link when a configuration sets none.
	LinkTemplate string
	// Now is the clock (tests set it).
	Now func() time.Time
	log *slog.Logger

	changes metric.Int64Counter
}

// New returns an alerter over the stores.
func New(alerts *store.Store, configs *specstore.Store[config.Config], linkTemplate string, log *slog.Logger) (*Alerter, error) {
	a := &Alerter{alerts: alerts, configs: configs, LinkTemplate: linkTemplate, Now: time.Now, log: log}
	meter := otel.GetMeterProvider().Meter("github.com/stickpoint/stickpoint/services/alerting")
	var err error
	if a.changes, err = meter.Int64Counter("stickpoint.alerting.alerts",
		metric.WithDescription("Alert changes, by kind and change (opened, updated, reopened, auto_resolved, escalated).")); err != nil {
		return nil, err
	}
	return a, nil
}

// configCache reads each tenant's configuration once per batch or sweep.
type configCache struct {
	store    *specstore.Store[config.Config]
	byTenant map[string]config.Config
}

func (c configCache) get(ctx context.Context, tenant string) (config.Config, error) {
	if cfg, ok := c.byTenant[tenant]; ok {
		return cfg, nil
	}
	st, err := c.store.Get(ctx, tenant)
	if err != nil {
		return config.Config{}, err
	}
	c.byTenant[tenant] = st.Spec
	return st.Spec, nil
}

// Escalates reports whether tenant's alerts escalate: its configuration
// has an escalation.
func (a *Alerter) Escalates(ctx context.Context, tenant string) (bool, error) {
	st, err := a.configs.Get(ctx, tenant)
	if err != nil {
		return false, err
	}
	return st.Spec.Escalation != nil, nil
}

// Handle applies a batch of SIGNALS messages, in order. It is idempotent:
// an alert remembers the signals it applied, and its notifications carry
// ids the streams dedup on.
func (a *Alerter) Handle(ctx context.Context, msgs []jetstream.Msg) error {
	configs := configCache{store: a.configs, byTenant: map[string]config.Config{}}
	for _, m := range msgs {
		sig, err := signals.Decode(m.Data())
		if err != nil {
			a.log.ErrorContext(ctx, "undecodable signal, skipped", "subject", m.Subject(), "error", err)
			continue
		}
		tenant := sig.GetTenantId()
		cfg, err := configs.get(ctx, tenant)
		if err != nil {
			return err
		}
		if err := a.Apply(ctx, tenant, cfg, sig); err != nil {
			return err
		}
	}
	return nil
}

// Apply applies one signal: it raises or updates the alert a rule makes
// of it, and resolves the alerts it shows are over.
func (a *Alerter) Apply(ctx context.Context, tenant string, cfg config.Config, sig *signalsv1.Signal) error {
	now := a.Now()
	if rule := cfg.Rule(sig.GetKind(), lifecycle.AccountOf(sig)); rule != nil {
		var change string
		id := lifecycle.AlertID(tenant, sig.GetAccountId(), sig.GetKind())
		err := a.change(ctx, tenant, id, func(cur *lifecycle.Record) (*lifecycle.Record, error) {
			next, c := lifecycle.OnSignal(tenant, cur, sig, rule, cfg, a.LinkTemplate, now)
			change = c
			return next, nil
		})
		if err != nil {
			return err
		}
		a.count(ctx, sig.GetKind(), change)
	}
	for _, kind := range lifecycle.Clears(sig) {
		resolved := false
		err := a.change(ctx, tenant, lifecycle.AlertID(tenant, sig.GetAccountId(), kind), func(cur *lifecycle.Record) (*lifecycle.Record, error) {
			if cur == nil {
				return nil, nil
			}
			next := lifecycle.AutoResolve(cur, sig, now)
			resolved = next != nil
			return next, nil
		})
		if err != nil {
			return err
		}
		if resolved {
			a.count(ctx, kind, lifecycle.AutoResolved)
		}
	}
	return nil
}

// change updates an alert and hands over what the change owes. When there
// is no change it still hands over what an earlier, interrupted change
// left in the alert's outbox.
func (a *Alerter) change(ctx context.Context, tenant, id string, f func(*lifecycle.Record) (*lifecycle.Record, error)) error {
	rec, err := a.alerts.Update(ctx, tenant, id, f) // the record as stored, changed or not; nil when none
	if err != nil {
		return err
	}
	return a.alerts.Flush(ctx, rec)
}

func (a *Alerter) count(ctx context.Context, kind, change string) {
	if change != "" {
		a.changes.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("change", change)))
	}
}

// Sweep goes through every stored alert: it hands over notifications a
// crash left in an outbox, and escalates the open alerts nobody
// acknowledged in time.
func (a *Alerter) Sweep(ctx context.Context) (escalated int, _ error) {
	configs := configCache{store: a.configs, byTenant: map[string]config.Config{}}
	var due []*lifecycle.Record
	err := a.alerts.Each(ctx, "", func(rec *lifecycle.Record) error {
		if len(rec.Outbox) > 0 || rec.Announce != "" {
			if err := a.alerts.Flush(ctx, rec); err != nil {
				return err
			}
		}
		cfg, err := configs.get(ctx, rec.Tenant)
		if err != nil {
			return err
		}
		if lifecycle.Escalate(rec, cfg.Escalation, a.Now()) != nil {
			due = append(due, rec)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep alerts: %w", err)
	}
	for _, rec := range due {
		esc := configs.byTenant[rec.Tenant].Escalation
		done := false
		if err := a.change(ctx, rec.Tenant, rec.Alert.GetId(), func(cur *lifecycle.Record) (*lifecycle.Record, error) {
			if cur == nil {
				return nil, nil
			}
			next := lifecycle.Escalate(cur, esc, a.Now())
			done = next != nil
			return next, nil
		}); err != nil {
			return escalated, err
		}
		if done {
			escalated++
			a.count(ctx, rec.Alert.GetKind(), lifecycle.Escalated)
		}
	}
	return escalated, nil
}
