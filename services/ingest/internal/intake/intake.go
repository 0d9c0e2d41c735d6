// Package intake is what both front doors (the HTTP API and gRPC ingest) do
// with a request's decoded events: apply the tenant's rate limit, stamp
// tenant and source, publish to JetStream and wait for its acknowledgement,
// and count what was accepted and rejected.
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/semaphore"

	"github.com/stickpoint/stickpoint/pkg/events"
)

const scope = "github.com/stickpoint/stickpoint/services/ingest/internal/intake"

// ErrUnavailable means JetStream did not acknowledge the events (a
// timeout, or a full stream): retry with the same messageIds.
var ErrUnavailable = errors.New("events could not be stored right now; retry with the same messageIds")

// RetryAfter is how long a client should wait after ErrUnavailable.
const RetryAfter = 2 * time.Second

// RateLimitedError means the tenant is over its event rate.
type RateLimitedError struct {
	Tenant     string
	Rate       float64
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("tenant %s is over its rate of %.0f events/s; retry after %s", e.Tenant, e.Rate, e.RetryAfter)
}

// Config is what an Intake enforces for both front doors.
type Config struct {
	// RatePerSecond and RateBurst are each tenant's event budget; zero
	// RatePerSecond disables the limit.
	RatePerSecond float64
	RateBurst     int
	// PublishTimeout bounds the wait for JetStream's acknowledgement.
	PublishTimeout time.Duration
	// CoalesceWait is how long a small request waits for concurrent ones of
	// its tenant to share one JetStream write (group commit); 0 publishes
	// each on its own.
	CoalesceWait time.Duration
	// CoalesceInflight is how many coalesced writes of a tenant may be in
	// flight at once (DefaultInflight); 0 means 2.
	CoalesceInflight int
	// MaxInflightBytes bounds the request bytes admitted at once; a request
	// waits up to AdmitWait for room, then is refused with ErrOverloaded.
	MaxInflightBytes int64
	AdmitWait        time.Duration
	// TenantInflightShare is the share of MaxInflightBytes one tenant's
	// requests may hold at once (1: no per-tenant bound).
	TenantInflightShare float64
}

// Intake accepts events for JetStream.
type Intake struct {
	publisher *coalescer
	limiter   *tenantLimiter
	rate      float64
	admission *admission
	log       *slog.Logger

	attrCache sync.Map // api + NUL + tenant -> [2]metric.MeasurementOption

	mu         sync.Mutex
	rejections map[Rejection]uint64
	warnings   map[Warning]uint64
	samples    map[WarningKind]Sample

	accepted  metric.Int64Counter
	rejected  metric.Int64Counter
	calls     metric.Int64Counter
	latency   metric.Float64Histogram
	batchSize metric.Int64Histogram
}

// New builds an intake.
func New(js jetstream.JetStream, cfg Config, log *slog.Logger) (*Intake, error) {
	if cfg.MaxInflightBytes < 1 {
		return nil, fmt.Errorf("intake: MaxInflightBytes must be positive")
	}
	if cfg.CoalesceInflight < 1 {
		cfg.CoalesceInflight = DefaultInflight(false)
	}
	meter := otel.GetMeterProvider().Meter(scope)
	in := &Intake{publisher: newCoalescer(js, cfg.CoalesceWait, cfg.PublishTimeout, cfg.CoalesceInflight), limiter: newTenantLimiter(cfg.RatePerSecond, cfg.RateBurst), rate: cfg.RatePerSecond,
		log: log, rejections: map[Rejection]uint64{}, warnings: map[Warning]uint64{}, samples: map[WarningKind]Sample{},
		admission: &admission{budget: semaphore.NewWeighted(cfg.MaxInflightBytes), size: cfg.MaxInflightBytes, wait: cfg.AdmitWait,
			tenantMax: tenantShare(cfg), tenants: map[string]*semaphore.Weighted{}}}
	var err error
	if in.admission.inflight, err = meter.Int64UpDownCounter("stickpoint.ingest.inflight.bytes", metric.WithUnit("By"),
		metric.WithDescription("Request bytes admitted and not yet answered (bounded by max_inflight_bytes).")); err != nil {
		return nil, err
	}
	if in.accepted, err = meter.Int64Counter("stickpoint.ingest.events.accepted",
		metric.WithDescription("Events acknowledged to clients, per tenant and API.")); err != nil {
		return nil, err
	}
	if in.rejected, err = meter.Int64Counter("stickpoint.ingest.requests.rejected",
		metric.WithDescription("Requests refused, per tenant (when known), API and reason.")); err != nil {
		return nil, err
	}
	if in.calls, err = meter.Int64Counter("stickpoint.ingest.calls.rejected",
		metric.WithDescription("Calls refused one by one inside batches whose other calls were stored, per tenant, API and reason.")); err != nil {
		return nil, err
	}
	if in.latency, err = meter.Float64Histogram("stickpoint.ingest.publish.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from request to JetStream acknowledgement of all its events.")); err != nil {
		return nil, err
	}
	if in.batchSize, err = meter.Int64Histogram("stickpoint.ingest.request.events",
		metric.WithDescription("Events per accepted request."),
		metric.WithExplicitBucketBoundaries(1, 10, 50, 100, 250, 500, 1000, 2500)); err != nil {
		return nil, err
	}
	return in, nil
}

func tenantShare(cfg Config) int64 {
	if cfg.TenantInflightShare <= 0 || cfg.TenantInflightShare >= 1 {
		return cfg.MaxInflightBytes
	}
	return max(1, int64(float64(cfg.MaxInflightBytes)*cfg.TenantInflightShare))
}

// Accept rate-limits, stamps and publishes evs for tenant and source. It
// returns nil only when every event is durably in the EVENTS stream.
func (in *Intake) Accept(ctx context.Context, api, tenant, source string, evs []events.Event, received time.Time) error {
	if ok, wait := in.limiter.take(tenant, len(evs)); !ok {
		return &RateLimitedError{Tenant: tenant, Rate: in.rate, RetryAfter: wait}
	}
	for i := range evs {
		evs[i].TenantID, evs[i].SourceID = tenant, source
	}
	start := time.Now()
	if err := in.publisher.publish(ctx, tenant, evs); err != nil {
		// The outcome is unknown (a timeout) or a refusal (stream full):
		// either way the client retries with the same messageIds, and the
		// dedup ids make that safe.
		in.log.WarnContext(ctx, "publish failed", "tenant_id", tenant, "events", len(evs), "error", err)
		return ErrUnavailable
	}
	byAPI, byTenant := in.attrs(api, tenant)
	in.latency.Record(ctx, time.Since(start).Seconds(), byAPI)
	in.batchSize.Record(ctx, int64(len(evs)), byAPI)
	in.accepted.Add(ctx, int64(len(evs)), byTenant)
	return nil
}

// attrs are the metric attribute sets of a request, built once per API and
// tenant: building them per request was a good share of its allocations.
func (in *Intake) attrs(api, tenant string) (byAPI, byTenant metric.MeasurementOption) {
	key := api + "\x00" + tenant
	if v, ok := in.attrCache.Load(key); ok {
		pair := v.([2]metric.MeasurementOption)
		return pair[0], pair[1]
	}
	pair := [2]metric.MeasurementOption{
		metric.WithAttributeSet(attribute.NewSet(attribute.String("api", api))),
		metric.WithAttributeSet(attribute.NewSet(attribute.String("tenant", tenant), attribute.String("api", api))),
	}
	in.attrCache.Store(key, pair)
	return pair[0], pair[1]
}

// CheckRate refuses a tenant whose event budget is empty right now, before
// its request body is read. Accept still charges each request in full.
func (in *Intake) CheckRate(tenant string) error {
	if over, wait := in.limiter.exhausted(tenant); over {
		return &RateLimitedError{Tenant: tenant, Rate: in.rate, RetryAfter: max(wait, time.Second)}
	}
	return nil
}

// Rejection keys refused requests for the per-tenant stats.
type Rejection struct {
	Tenant, API, Reason string
	Minute              time.Time
}

// Reject counts a refused request.
func (in *Intake) Reject(ctx context.Context, api, tenant, reason string) {
	in.rejected.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("api", api), attribute.String("reason", reason)))
	in.mu.Lock()
	in.rejections[Rejection{Tenant: tenant, API: api, Reason: reason, Minute: time.Now().UTC().Truncate(time.Minute)}]++
	in.mu.Unlock()
}

// TakeRejections returns the counts since the last call and starts over.
func (in *Intake) TakeRejections() map[Rejection]uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := in.rejections
	in.rejections = map[Rejection]uint64{}
	return out
}

// PutBackRejections re-adds counts that could not be stored, for the next flush.
func (in *Intake) PutBackRejections(m map[Rejection]uint64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, v := range m {
		in.rejections[k] += v
	}
}

// CallRejection is a call of a batch refused on its own while the rest of
// the batch was stored.
type CallRejection struct {
	// Code is invalid_request or limit_exceeded; Field names the call and
	// the field at fault, as batch[3].timestamp.
	Code, Field, Message string
	Call                 []byte
}

// WarningKind is a kind of refused call for a tenant: a reason and a field
// within a call.
type WarningKind struct {
	Tenant, API, Code, Field string
}

// Warning counts refused calls of a kind per minute.
type Warning struct {
	WarningKind
	Minute time.Time
}

// Sample is the latest refused call of a kind.
type Sample struct {
	Message, Call string
	Seen          time.Time
}

// maxSampleBytes bounds the call kept as an example.
const maxSampleBytes = 2048

// RejectCalls counts calls refused one by one and keeps the latest of each
// kind as an example, for the tenant's ingest warnings.
func (in *Intake) RejectCalls(ctx context.Context, api, tenant string, calls []CallRejection) {
	now := time.Now().UTC()
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, c := range calls {
		kind := WarningKind{Tenant: tenant, API: api, Code: c.Code, Field: FieldInCall(c.Field)}
		in.warnings[Warning{WarningKind: kind, Minute: now.Truncate(time.Minute)}]++
		call := c.Call
		if len(call) > maxSampleBytes {
			call = call[:maxSampleBytes]
		}
		in.samples[kind] = Sample{Message: c.Field + ": " + c.Message, Call: string(call), Seen: now}
		in.calls.Add(ctx, 1, metric.WithAttributes(attribute.String("tenant", tenant), attribute.String("api", api), attribute.String("reason", c.Code)))
	}
}

// FieldInCall is the field within a call: "batch[3].timestamp" and
// "items[3].timestamp" are "timestamp"; "batch[3]" (the whole call) is "".
func FieldInCall(field string) string {
	if strings.HasPrefix(field, "batch[") || strings.HasPrefix(field, "items[") {
		if i := strings.IndexByte(field, ']'); i >= 0 {
			return strings.TrimPrefix(field[i+1:], ".")
		}
	}
	return field
}

// TakeWarnings returns the refused-call counts and examples since the last
// call and starts over.
func (in *Intake) TakeWarnings() (map[Warning]uint64, map[WarningKind]Sample) {
	in.mu.Lock()
	defer in.mu.Unlock()
	w, s := in.warnings, in.samples
	in.warnings, in.samples = map[Warning]uint64{}, map[WarningKind]Sample{}
	return w, s
}

// PutBackWarnings re-adds what could not be stored, for the next flush.
func (in *Intake) PutBackWarnings(w map[Warning]uint64, s map[WarningKind]Sample) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, v := range w {
		in.warnings[k] += v
	}
	for k, v := range s {
		if cur, ok := in.samples[k]; !ok || cur.Seen.Before(v.Seen) {
			in.samples[k] = v
		}
	}
}
