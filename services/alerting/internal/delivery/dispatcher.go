package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/specstore"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
	"github.com/stickpoint/stickpoint/services/alerting/internal/store"
)

// Durable is the dispatcher's consumer of DELIVERIES.
const Durable = "alerting-delivery"

// Delivery statuses in an alert's log.
const (
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
	StatusDead      = "dead"
)

// Config bounds retries.
type Config struct {
	// MaxAttempts is how many attempts a notification gets before it is
	// dead-lettered.
	MaxAttempts int `json:"max_attempts"`
	// Backoff is the wait after the first failed attempt; it doubles per
	// attempt, up to MaxBackoff, with ±20% jitter. A receiver's
	// Retry-After, when longer, wins (up to MaxBackoff).
	Backoff    time.Duration `json:"backoff"`
	MaxBackoff time.Duration `json:"max_backoff"`
	// Concurrency is how many attempts run at once, across channels: a
	// channel that hangs holds only its own attempts.
	Concurrency int `json:"concurrency"`
}

// DefaultConfig retries 10 times over about 20 minutes.
func DefaultConfig() Config {
	return Config{MaxAttempts: 10, Backoff: 2 * time.Second, MaxBackoff: 5 * time.Minute, Concurrency: 64}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	switch {
	case c.MaxAttempts < 1 || c.MaxAttempts > 100:
		return fmt.Errorf("alerting.delivery.max_attempts: %d is not from 1 to 100", c.MaxAttempts)
	case c.Backoff <= 0 || c.MaxBackoff < c.Backoff:
		return fmt.Errorf("alerting.delivery.backoff and max_backoff: want 0 < backoff <= max_backoff, got %v and %v", c.Backoff, c.MaxBackoff)
	case c.Concurrency < 1:
		return fmt.Errorf("alerting.delivery.concurrency: %d is under 1", c.Concurrency)
	}
	return nil
}

// Delay is the wait before attempt n+1 after n failed attempts.
func (c Config) Delay(n int, retryAfter time.Duration) time.Duration {
	d := c.Backoff
	for i := 1; i < n && d < c.MaxBackoff; i++ {
		d *= 2
	}
	d = time.Duration(float64(min(d, c.MaxBackoff)) * (0.8 + 0.4*rand.Float64()))
	if retryAfter > d {
		d = retryAfter
	}
	return min(d, c.MaxBackoff)
}

// Dispatcher delivers the notifications of the DELIVERIES stream.
type Dispatcher struct {
	cfg     Config
	bus     *natsjs.Bus
	alerts  *store.Store
	configs *specstore.Store[config.Config]
	sender  *Sender
	log     *slog.Logger

	attempts metric.Int64Counter
	latency  metric.Float64Histogram
	toAlert  metric.Float64Histogram
}

// NewDispatcher delivers with sender.
func NewDispatcher(cfg Config, bus *natsjs.Bus, alerts *store.Store, configs *specstore.Store[config.Config], sender *Sender, log *slog.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, bus: bus, alerts: alerts, configs: configs, sender: sender, log: log}
	meter := otel.GetMeterProvider().Meter("github.com/stickpoint/stickpoint/services/alerting")
	var err error
	if d.attempts, err = meter.Int64Counter("stickpoint.alerting.deliveries",
		metric.WithDescription("Delivery attempts, by channel type and status (delivered, failed, dead).")); err != nil {
		return nil, err
	}
	if d.latency, err = meter.Float64Histogram("stickpoint.alerting.delivery.duration",
		metric.WithDescription("Time of one delivery attempt, by channel type."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	if d.toAlert, err = meter.Float64Histogram("stickpoint.alerting.event_to_alert",
		metric.WithDescription("From the event behind an alert (its signal's event time) to the first successful delivery."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return d, nil
}

// Run consumes until ctx ends; each notification is attempted on its own
// goroutine, up to Concurrency at once.
func (d *Dispatcher) Run(ctx context.Context) error {
	cons, err := d.bus.JS.CreateOrUpdateConsumer(ctx, natsjs.DeliveriesStream, jetstream.ConsumerConfig{
		Durable: Durable, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "deliveries.>",
		// A notification held by a process that died comes back after
		// AckWait; a long attempt keeps its own alive (see keepAlive).
		AckWait: ackWait, MaxAckPending: 10 * d.cfg.Concurrency,
	})
	if err != nil {
		return fmt.Errorf("declare consumer %s: %w", Durable, err)
	}
	sem := make(chan struct{}, d.cfg.Concurrency)
	var wg sync.WaitGroup
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			_ = m.Nak() // shutting down: back to the stream at once, for whoever runs next
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d.handle(ctx, m)
		}()
	}, jetstream.PullMaxMessages(d.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("consume %s: %w", Durable, err)
	}
	<-ctx.Done()
	cc.Stop()
	wg.Wait()
	return nil
}

func (d *Dispatcher) handle(ctx context.Context, m jetstream.Msg) {
	var job lifecycle.Job
	if err := json.Unmarshal(m.Data(), &job); err != nil {
		d.log.ErrorContext(ctx, "undecodable notification, dropped", "error", err)
		_ = m.Term()
		return
	}
	attempt := 1
	if md, err := m.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}
	log := d.log.With("alert", job.AlertID, "channel", job.Channel, "delivery", job.DeliveryID, "attempt", attempt)
	rec, err := d.alerts.Get(ctx, job.Tenant, job.AlertID)
	if errors.Is(err, store.ErrNotFound) {
		_ = m.Term()
		return
	}
	if err != nil {
		d.retryLater(ctx, m, log, err)
		return
	}
	cfg, err := d.configs.Get(ctx, job.Tenant)
	if err != nil {
		d.retryLater(ctx, m, log, err)
		return
	}
	ch := cfg.Spec.Channel(job.Channel)
	var res Result
	start := time.Now()
	chType := ""
	if ch == nil {
		res = Result{Err: fmt.Errorf("channel %q is no longer in the configuration", job.Channel), Permanent: true}
	} else {
		chType = ch.Type
		res = keepAlive(ctx, m, func() Result { return d.sender.Send(ctx, ch, rec.Alert, job) })
	}
	took := time.Since(start)
	if ctx.Err() != nil && res.Err != nil {
		_ = m.Nak() // shutting down: tried again by whoever runs next
		return
	}
	status := StatusDelivered
	switch {
	case res.Err == nil:
	case res.Permanent || attempt >= d.cfg.MaxAttempts:
		status = StatusDead
	default:
		status = StatusFailed
	}
	entry := &alertsv1.Delivery{DeliveryId: job.DeliveryID, ChannelId: job.Channel, ChannelType: chType, Trigger: job.Trigger,
		Attempt: int32(attempt), Status: status, Code: int32(res.Code), LatencyMs: took.Milliseconds(), At: timestamppb.New(start)}
	if res.Err != nil {
		entry.Error = res.Err.Error()
	}
	if _, err := d.alerts.Update(ctx, job.Tenant, job.AlertID, func(cur *lifecycle.Record) (*lifecycle.Record, error) {
		if cur == nil {
			return nil, nil
		}
		return lifecycle.RecordDelivery(cur, entry), nil
	}); err != nil {
		log.WarnContext(ctx, "could not record the delivery attempt", "error", err)
	}
	attrs := metric.WithAttributes(attribute.String("channel_type", chType), attribute.String("status", status))
	d.attempts.Add(ctx, 1, attrs)
	d.latency.Record(ctx, took.Seconds(), metric.WithAttributes(attribute.String("channel_type", chType)))
	switch status {
	case StatusDelivered:
		if job.Trigger != lifecycle.Escalated {
			d.toAlert.Record(ctx, time.Since(rec.Alert.GetEvidence().GetOccurredAt().AsTime()).Seconds())
		}
		_ = m.Ack()
	case StatusFailed:
		delay := d.cfg.Delay(attempt, res.RetryAfter)
		log.InfoContext(ctx, "delivery failed; will retry", "error", res.Err, "code", res.Code, "in", delay)
		_ = m.NakWithDelay(delay)
	case StatusDead:
		log.WarnContext(ctx, "delivery dead-lettered", "error", res.Err, "code", res.Code)
		d.deadLetter(ctx, m, res.Err)
	}
}

// ackWait is how long a notification stays with a process that stopped
// answering for it.
const ackWait = 30 * time.Second

// keepAlive runs send, telling the stream every few seconds that the
// notification is still being worked on, so an attempt may outlast
// ackWait (a channel timeout is up to 5 minutes).
func keepAlive(ctx context.Context, m jetstream.Msg, send func() Result) Result {
	done := make(chan Result, 1)
	go func() { done <- send() }()
	tick := time.NewTicker(ackWait / 3)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			return r
		case <-tick.C:
			_ = m.InProgress()
		case <-ctx.Done():
			return <-done // the send's own context ends it
		}
	}
}

// retryLater puts a notification back when its inputs can't be read: the
// store, not the channel, is at fault, so it is not an attempt.
func (d *Dispatcher) retryLater(ctx context.Context, m jetstream.Msg, log *slog.Logger, err error) {
	log.WarnContext(ctx, "could not read the alert or configuration; retrying", "error", err)
	_ = m.NakWithDelay(d.cfg.Backoff)
}

func (d *Dispatcher) deadLetter(ctx context.Context, m jetstream.Msg, reason error) {
	msg := &nats.Msg{Subject: natsjs.DeadLetterSubject(natsjs.DeliveriesStream, Durable), Data: m.Data(), Header: nats.Header{}}
	msg.Header.Set(natsjs.HeaderDeadLetterReason, reason.Error())
	msg.Header.Set(natsjs.HeaderOriginalSubject, m.Subject())
	if md, err := m.Metadata(); err == nil {
		msg.Header.Set(natsjs.HeaderOriginalSeq, strconv.FormatUint(md.Sequence.Stream, 10))
		msg.Header.Set(natsjs.HeaderDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	}
	if _, err := d.bus.JS.PublishMsg(ctx, msg); err != nil {
		d.log.ErrorContext(ctx, "dead-letter the notification", "error", err)
		_ = m.NakWithDelay(d.cfg.Backoff)
		return
	}
	_ = m.Term()
}
