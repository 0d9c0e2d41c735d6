package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

const scope = "github.com/stickpoint/stickpoint/pkg/natsjs"

// Headers set on a dead-lettered message, beside the original headers.
const (
	HeaderDeadLetterReason = "Stickpoint-Dead-Letter-Reason"
	HeaderOriginalSubject  = "Stickpoint-Original-Subject"
	HeaderOriginalSeq      = "Stickpoint-Original-Stream-Seq"
	HeaderDeliveries       = "Stickpoint-Deliveries"
	// HeaderFailures counts the deliveries that failed on their own while
	// the sink was healthy; retries during an outage are not failures.
	HeaderFailures = "Stickpoint-Failures"
)

// Handler does the work for a batch of messages. It returns nil only once
// that work is durable; the consumer then acks every message of the batch.
// It must be idempotent: a message can arrive again (a lost ack, a crash
// between the work and the ack).
type Handler func(ctx context.Context, msgs []jetstream.Msg) error

// ConsumerConfig configures a durable pull consumer.
type ConsumerConfig struct {
	Stream string
	// Durable is the consumer name, "<service>-<purpose>". Replicas of a
	// service share it and so share the work.
	Durable        string
	FilterSubjects []string
	// MaxBatch is the most messages handed to the handler at once.
	MaxBatch int
	// MaxBatchBytes closes a batch once its payloads reach it, and bounds
	// what the client fetches ahead, so memory follows bytes, not message
	// counts. It must exceed the largest message (NATS max_payload, 1 MB
	// by default), or fetching would stall.
	MaxBatchBytes int
	// MaxWait is how long a partial batch waits for more messages.
	MaxWait time.Duration
	// AckWait is how long the server waits for an ack before redelivering.
	AckWait time.Duration
	// MaxDeliver is how many failed deliveries a message gets before it is
	// dead-lettered. The runner enforces it, not the server: the server's
	// own MaxDeliver stops redelivery silently.
	MaxDeliver int
	// NakDelay is the redelivery delay after the n-th failed delivery.
	NakDelay func(n uint64) time.Duration
	// OutageDelay is the redelivery delay while Healthy reports the sink
	// down: short and fixed, so the consumer catches up soon after the
	// sink is back, however long the outage was.
	OutageDelay time.Duration
	// Healthy, when set, tells an outage from a poison message. When a batch
	// fails and Healthy reports an error, the sink is down: every message
	// is retried later and none is dead-lettered, however long the outage.
	// When Healthy is nil or passes, the batch is split to find the messages
	// that fail on their own, and only those count towards MaxDeliver.
	Healthy func(ctx context.Context) error
	// DrainTimeout bounds the final batch at shutdown.
	DrainTimeout time.Duration
	// PurgeAcked purges the stream, on each of FilterSubjects, up to the
	// consumer's ack floor every second: for a limits-retention stream
	// whose messages are done with once this consumer acked them.
	PurgeAcked bool
	// Pinned delivers to one client at a time (JetStream's pinned-client
	// priority policy): replicas of a service stand by, and one takes over
	// when the pinned one stops pulling for AckWait. A handler that keeps
	// state about what it has seen relies on this.
	Pinned bool
	// MaxRestarts is how many times in a row the runner declares its
	// consumer again after losing it (deleted, or its stream gone) before
	// Run gives up with an error. RestartDelay is the wait before the n-th.
	MaxRestarts  int
	RestartDelay func(n uint64) time.Duration
}

func (c *ConsumerConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 500
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 16 << 20
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 200 * time.Millisecond
	}
	if c.AckWait <= 0 {
		c.AckWait = time.Minute
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if c.NakDelay == nil {
		c.NakDelay = ExponentialDelay(time.Second, time.Minute)
	}
	if c.OutageDelay <= 0 {
		c.OutageDelay = 2 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MaxRestarts <= 0 {
		c.MaxRestarts = 5
	}
	if c.RestartDelay == nil {
		c.RestartDelay = ExponentialDelay(time.Second, 30*time.Second)
	}
}

// pinnedGroup is the priority group of pinned consumers.
const pinnedGroup = "pinned"

// ExponentialDelay doubles from base per delivery, capped at limit.
func ExponentialDelay(base, limit time.Duration) func(uint64) time.Duration {
	return func(n uint64) time.Duration {
		d := base
		for i := uint64(1); i < n && d < limit; i++ {
			d *= 2
		}
		return min(d, limit)
	}
}

// Consumer runs a handler over a durable pull consumer.
type Consumer struct {
	bus     *Bus
	cfg     ConsumerConfig
	handler Handler
	log     *slog.Logger
	tracer  trace.Tracer

	messages  metric.Int64Counter
	batchSize metric.Int64Histogram
	duration  metric.Float64Histogram
	restarts  metric.Int64Counter
	pending   atomic.Int64
	inHand    atomic.Int64
	attrs     metric.MeasurementOption

	// cons is the consumer being consumed, and how many times it was
	// declared (the runner's goroutine sets both).
	cons  jetstream.Consumer
	epoch uint64
	// down is why the consumer is not consuming right now, nil while it is.
	down atomic.Pointer[error]
	// failures counts each message's real failures (failing alone with a
	// healthy sink), by stream sequence. Deliveries are no measure: they
	// include every retry during an outage. The runner's goroutine alone
	// uses it.
	failures map[uint64]int
}

// errNotStarted is Err before Run has declared the consumer.
var errNotStarted = errors.New("consumer not started")

// NewConsumer builds a consumer; Run starts it.
func NewConsumer(bus *Bus, cfg ConsumerConfig, h Handler, log *slog.Logger) (*Consumer, error) {
	cfg.setDefaults()
	if cfg.Stream == "" || cfg.Durable == "" {
		return nil, errors.New("consumer: stream and durable are required")
	}
	if cfg.PurgeAcked && len(cfg.FilterSubjects) == 0 {
		return nil, errors.New("consumer: PurgeAcked purges the consumer's FilterSubjects, and there are none")
	}
	meter := otel.GetMeterProvider().Meter(scope)
	c := &Consumer{
		bus: bus, cfg: cfg, handler: h,
		log:      log.With("consumer", cfg.Durable, "stream", cfg.Stream),
		tracer:   otel.GetTracerProvider().Tracer(scope),
		attrs:    metric.WithAttributes(attribute.String("consumer", cfg.Durable)),
		failures: map[uint64]int{},
	}
	c.setDown(errNotStarted)
	var err error
	if c.restarts, err = meter.Int64Counter("stickpoint.consumer.restarts",
		metric.WithDescription("Times a consumer was declared again after it stopped (deleted, or its stream lost).")); err != nil {
		return nil, err
	}
	if c.messages, err = meter.Int64Counter("stickpoint.consumer.messages",
		metric.WithDescription("Messages finished by a consumer, by outcome: acked, retried, dead_lettered, ack_failed.")); err != nil {
		return nil, err
	}
	if c.batchSize, err = meter.Int64Histogram("stickpoint.consumer.batch.size",
		metric.WithDescription("Messages per handled batch."),
		metric.WithExplicitBucketBoundaries(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000)); err != nil {
		return nil, err
	}
	if c.duration, err = meter.Float64Histogram("stickpoint.consumer.handle.duration",
		metric.WithDescription("Time to handle a batch."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return c, nil
}

// Pending is the consumer's lag: messages in the stream not yet delivered,
// as of the last poll.
func (c *Consumer) Pending() int64 { return c.pending.Load() }

// InHand is how many messages the runner has received and not yet handed
// to the handler: what a drain at shutdown still handles.
func (c *Consumer) InHand() int64 { return c.inHand.Load() }

// Err is nil while the consumer is consuming, and says why otherwise
// (not started yet, restarting after it was lost, stopped). Readiness
// checks use it.
func (c *Consumer) Err() error {
	if p := c.down.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Consumer) setDown(err error) {
	if err == nil {
		c.down.Store(nil)
		return
	}
	c.down.Store(&err)
}

// Run consumes until ctx is cancelled, then drains: it stops fetching,
// handles what was already fetched, and returns nil. Messages it could not
// finish are redelivered after AckWait. When the consumer is lost (deleted,
// or its stream gone), Run logs it, counts it, and declares the consumer
// again; after MaxRestarts failed attempts in a row it returns the error,
// so the process exits rather than answer while nothing is consumed.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.setDown(errors.New("consumer stopped"))
	failed := 0
	for {
		consumed, err := c.runOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		c.setDown(err)
		c.restarts.Add(ctx, 1, c.attrs)
		if consumed {
			failed = 0 // it ran: this is a new loss, not a failed restart
		}
		failed++
		if failed > c.cfg.MaxRestarts {
			c.log.ErrorContext(ctx, "consumer lost and could not be declared again; giving up", "attempts", failed-1, "error", err)
			return fmt.Errorf("consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
		}
		wait := c.cfg.RestartDelay(uint64(failed))
		c.log.ErrorContext(ctx, "consumer lost; declaring it again", "attempt", failed, "in", wait, "error", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
	}
}

// runOnce declares the consumer and consumes until ctx ends (then drains
// and returns nil) or the consumer is lost. consumed says whether it got as
// far as consuming.
func (c *Consumer) runOnce(ctx context.Context) (consumed bool, _ error) {
	maxAckPending := max(2*c.cfg.MaxBatch, 1000)
	cfg := jetstream.ConsumerConfig{
		Durable:        c.cfg.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
		FilterSubjects: c.cfg.FilterSubjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	// Each pull asks for up to MaxAckPending messages and MaxBatchBytes
	// bytes, and the client refills by message count. PullMaxBytes alone
	// makes the client track bytes itself as well; a consumer on it once
	// sat idle for 10 s with messages waiting (TestConsumerBatchesByBytes,
	// in a cold CI run), and that byte tracking is the suspect.
	consumeOpts := []jetstream.PullConsumeOpt{jetstream.PullMaxMessagesWithBytesLimit(maxAckPending, c.cfg.MaxBatchBytes)}
	if c.cfg.Pinned {
		// The pin moves to a standby replica once the pinned one has not
		// pulled for AckWait. A handler finishes or gives up within half
		// of AckWait (see handle), so a working replica keeps its pin,
		// and pulls are renewed well within the TTL while idle.
		cfg.PriorityPolicy, cfg.PriorityGroups, cfg.PinnedTTL = jetstream.PriorityPolicyPinned, []string{pinnedGroup}, c.cfg.AckWait
		consumeOpts = append(consumeOpts, jetstream.PullPriorityGroup(pinnedGroup),
			jetstream.PullExpiry(max(time.Second, min(30*time.Second, c.cfg.AckWait/3))))
	}
	cons, err := c.bus.JS.CreateOrUpdateConsumer(ctx, c.cfg.Stream, cfg)
	if err != nil {
		return false, fmt.Errorf("declare consumer %s on %s: %w", c.cfg.Durable, c.cfg.Stream, err)
	}
	c.cons = cons
	c.epoch = declarations.Add(1)

	meter := otel.GetMeterProvider().Meter(scope)
	lag, err := meter.Int64ObservableGauge("stickpoint.consumer.pending",
		metric.WithDescription("Messages in the stream not yet delivered to the consumer (lag)."))
	if err != nil {
		return false, err
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(lag, c.pending.Load(), c.attrs)
		return nil
	}, lag)
	if err != nil {
		return false, err
	}
	defer func() { _ = reg.Unregister() }()

	// Fetched messages wait in the client's buffer (MaxBatchBytes), then
	// in this hand-off (a few messages), then in the open batch: about
	// twice MaxBatchBytes at most.
	msgs := make(chan received, handoff)
	fatal := make(chan error, 1)
	consumeOpts = append(consumeOpts,
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// Without this handler Consume stops silently when its
			// consumer is deleted.
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				select {
				case fatal <- err:
				default:
				}
				return
			}
			c.log.WarnContext(ctx, "consume", "error", err)
		}))
	cc, err := cons.Consume(func(m jetstream.Msg) { c.inHand.Add(1); msgs <- received{m, time.Now()} }, consumeOpts...)
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", c.cfg.Durable, err)
	}
	c.setDown(nil)
	c.log.InfoContext(ctx, "consumer started", "pinned", c.cfg.Pinned)

	batch := &openBatch{max: c.cfg.MaxBatch, maxBytes: c.cfg.MaxBatchBytes}
	flush := time.NewTimer(c.cfg.MaxWait)
	defer flush.Stop()
	lagPoll := time.NewTicker(time.Second)
	defer lagPoll.Stop()
	_, _ = c.pollLag(ctx, cons)
	got := 0 // messages since the last poll
	for {
		select {
		case m := <-msgs:
			got++
			if len(batch.msgs) == 0 {
				flush.Reset(c.cfg.MaxWait)
			}
			if batch.add(m) {
				batch.handle(ctx, c)
			}
		case <-flush.C:
			if len(batch.msgs) > 0 {
				batch.handle(ctx, c)
			}
		case <-lagPoll.C:
			// The poll also catches a deletion that Consume missed (one
			// made while no pull request was in flight is never reported).
			info, err := c.pollLag(ctx, cons)
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				return true, c.abandon(ctx, cc, msgs, batch, err)
			}
			// A pull consumer with messages waiting, none delivered and
			// unacked, no pull request at the server and nothing received
			// for a second has stopped pulling: the client's refill of
			// byte-capped pulls has been seen to stall (TestConsumerBatchesByBytes
			// in CI, twice). Pull again.
			if info != nil && info.NumPending > 0 && info.NumAckPending == 0 && info.NumWaiting == 0 && got == 0 && len(batch.msgs) == 0 {
				c.log.WarnContext(ctx, "consumer stopped pulling with messages waiting; pulling again", "pending", info.NumPending)
				cc.Stop()
				if cc, err = cons.Consume(func(m jetstream.Msg) { c.inHand.Add(1); msgs <- received{m, time.Now()} }, consumeOpts...); err != nil {
					return true, c.abandon(ctx, nil, msgs, batch, fmt.Errorf("consume %s again: %w", c.cfg.Durable, err))
				}
			}
			got = 0
		case err := <-fatal:
			return true, c.abandon(ctx, cc, msgs, batch, err)
		case <-ctx.Done():
			c.drain(ctx, cc, msgs, batch)
			return true, nil
		}
	}
}

// received is a message and when the runner got it.
type received struct {
	msg jetstream.Msg
	at  time.Time
}

// abandon stops consuming after the consumer was lost. Its messages can't
// be acked any more; the next consumer gets them again.
func (c *Consumer) abandon(ctx context.Context, cc jetstream.ConsumeContext, msgs chan received, batch *openBatch, err error) error {
	if cc != nil {
		cc.Stop()
	}
	for more := true; more; {
		select {
		case <-msgs:
			c.inHand.Add(-1)
		default:
			more = false
		}
	}
	c.inHand.Add(-int64(len(batch.msgs)))
	batch.reset()
	c.pending.Store(0)
	c.log.ErrorContext(ctx, "consumer lost", "error", err)
	return fmt.Errorf("consumer %s stopped: %w", c.cfg.Durable, err)
}

func (c *Consumer) pollLag(ctx context.Context, cons jetstream.Consumer) (*jetstream.ConsumerInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return nil, err
	}
	c.pending.Store(int64(info.NumPending))
	if c.cfg.PurgeAcked && info.AckFloor.Stream > 0 {
		c.purge(ictx, info.AckFloor.Stream)
	}
	return info, nil
}

// purge removes this consumer's messages up to and including floor, all of
// them acked. A purge failing now is done by the next one.
func (c *Consumer) purge(ctx context.Context, floor uint64) {
	s, err := c.bus.JS.Stream(ctx, c.cfg.Stream)
	if err != nil {
		c.log.WarnContext(ctx, "purge acked messages", "error", err)
		return
	}
	for _, subject := range c.cfg.FilterSubjects {
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(floor+1)); err != nil {
			c.log.WarnContext(ctx, "purge acked messages", "subject", subject, "error", err)
		}
	}
}

// handoff is how many fetched messages wait between the client's buffer and
// the open batch: enough to keep the batcher busy, few enough that their
// bytes do not matter next to MaxBatchBytes.
const handoff = 16

// openBatch gathers messages until MaxBatch messages or MaxBatchBytes.
type openBatch struct {
	msgs          []jetstream.Msg
	first         time.Time // when the runner got the oldest message
	bytes         int
	max, maxBytes int
}

// add appends m and reports whether the batch is full.
func (b *openBatch) add(r received) bool {
	if len(b.msgs) == 0 {
		b.first = r.at
	}
	b.msgs = append(b.msgs, r.msg)
	b.bytes += len(r.msg.Data())
	return len(b.msgs) >= b.max || b.bytes >= b.maxBytes
}

// handle hands the batch to the consumer's handler and starts a new one,
// letting go of the handled messages.
func (b *openBatch) handle(ctx context.Context, c *Consumer) {
	c.inHand.Add(-int64(len(b.msgs)))
	c.process(ctx, b.msgs, b.first)
	b.reset()
}

func (b *openBatch) reset() {
	clear(b.msgs)
	b.msgs, b.bytes = b.msgs[:0], 0
}

// drain stops fetching and handles what was fetched already.
func (c *Consumer) drain(ctx context.Context, cc jetstream.ConsumeContext, msgs chan received, batch *openBatch) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.DrainTimeout)
	defer cancel()
	cc.Drain()
	for done := false; !done; {
		select {
		case m := <-msgs:
			if batch.add(m) {
				batch.handle(dctx, c)
			}
		case <-cc.Closed():
			done = true
		case <-dctx.Done():
			cc.Stop()
			done = true
		}
	}
	for more := true; more; {
		select {
		case m := <-msgs:
			if batch.add(m) && dctx.Err() == nil {
				batch.handle(dctx, c)
			}
		default:
			more = false
		}
	}
	if len(batch.msgs) > 0 && dctx.Err() == nil {
		batch.handle(dctx, c)
	}
	// Acks are fire-and-forget publishes: flush so the server has them
	// before Run returns, and a restart does not redeliver finished work.
	if err := c.bus.NC.FlushWithContext(dctx); err != nil {
		c.log.WarnContext(ctx, "flush acks at drain", "error", err)
	}
	if c.cfg.Pinned {
		// Hand the pin over now rather than after AckWait. (If another
		// replica holds it, it just pins again.)
		if s, err := c.bus.JS.Stream(dctx, c.cfg.Stream); err == nil {
			if err := s.UnpinConsumer(dctx, c.cfg.Durable, pinnedGroup); err != nil {
				c.log.DebugContext(ctx, "unpin at drain", "error", err)
			}
		}
	}
	c.log.InfoContext(ctx, "consumer drained")
}

// process handles a batch whose oldest message the runner got at first.
//
// The handler must finish within half of AckWait of that: the server
// redelivers an unacked message after AckWait, and with Pinned, moves the
// pin to another replica once this one stops pulling for AckWait. The
// handler's context carries that deadline, so a replica that stalled (a
// pause, a long GC, SIGSTOP) and wakes up late gives up its batch instead
// of committing work another replica is already redoing. A batch that is
// already late is not started: it is retried at once.
func (c *Consumer) process(ctx context.Context, batch []jetstream.Msg, first time.Time) {
	deadline := first.Add(c.cfg.AckWait / 2)
	if time.Now().After(deadline) {
		c.log.WarnContext(ctx, "batch waited past half of AckWait before it could be handled; retrying it", "messages", len(batch),
			"waited", time.Since(first).Round(time.Millisecond))
		c.retry(context.WithoutCancel(ctx), batch, "late")
		return
	}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	hctx = context.WithValue(hctx, epochKey{}, c.epoch)
	if c.cfg.Pinned {
		cons := c.cons
		hctx = context.WithValue(hctx, ownerKey{}, func(ctx context.Context) error { return c.stillPinned(ctx, cons, batch) })
	}
	c.handleBatch(hctx, batch)
}

type epochKey struct{}

// declarations numbers every consumer declaration in the process, so no
// two share an epoch.
var declarations atomic.Uint64

// Epoch tells a handler which declaration of its consumer delivered the
// batch: it changes when the runner declares a lost consumer again, whose
// delivery sequence then starts over, and whose messages another replica
// may have handled meanwhile.
func Epoch(ctx context.Context) uint64 {
	e, _ := ctx.Value(epochKey{}).(uint64)
	return e
}

// ErrNotOwned means the batch's messages were delivered under a pin this
// replica no longer holds: another one may be handling them already.
var ErrNotOwned = errors.New("this replica no longer holds the consumer's pin")

type ownerKey struct{}

// Owned tells a handler, just before it commits its work, whether it still
// owns its batch: with a Pinned consumer, whether this replica still holds
// the pin its messages were delivered under. A replica that stalled (a
// pause, SIGSTOP) past AckWait may wake up holding messages that a standby
// has taken over, and must not commit them twice. (It narrows the window to
// the time between this check and the commit.) Without a pin it is nil.
func Owned(ctx context.Context) error {
	if check, ok := ctx.Value(ownerKey{}).(func(context.Context) error); ok {
		return check(ctx)
	}
	return nil
}

func (c *Consumer) stillPinned(ctx context.Context, cons jetstream.Consumer, batch []jetstream.Msg) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("check the consumer's pin: %w", err)
	}
	current := ""
	for _, g := range info.PriorityGroups {
		if g.Group == pinnedGroup {
			current = g.PinnedClientID
		}
	}
	for _, m := range batch {
		if pin := m.Headers().Get("Nats-Pin-Id"); pin == "" || pin != current {
			return ErrNotOwned
		}
	}
	return nil
}

func (c *Consumer) handleBatch(ctx context.Context, batch []jetstream.Msg) {
	// One span per batch, linked to each message's trace (up to 128).
	links := make([]trace.Link, 0, min(len(batch), 128))
	for _, m := range batch[:min(len(batch), 128)] {
		if sc := trace.SpanContextFromContext(ExtractTrace(ctx, m.Headers())); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, span := c.tracer.Start(ctx, "consume "+c.cfg.Durable, trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(batch))))
	defer span.End()

	start := time.Now()
	err := c.handler(ctx, batch)
	c.batchSize.Record(ctx, int64(len(batch)), c.attrs)
	c.duration.Record(ctx, time.Since(start).Seconds(), c.attrs)
	if err == nil {
		c.ack(ctx, batch)
		return
	}
	span.RecordError(err)
	c.fail(ctx, batch, err)
}

func (c *Consumer) ack(ctx context.Context, msgs []jetstream.Msg) {
	failed := 0
	for _, m := range msgs {
		if len(c.failures) > 0 {
			if md, err := m.Metadata(); err == nil {
				delete(c.failures, md.Sequence.Stream)
			}
		}
		if err := m.Ack(); err != nil {
			// The work is durable; a lost ack means a redelivery, which
			// the idempotent handler absorbs.
			failed++
			if failed == 1 {
				c.log.WarnContext(ctx, "ack failed", "error", err)
			}
		}
	}
	c.count(ctx, "acked", len(msgs)-failed)
	c.count(ctx, "ack_failed", failed)
}

func (c *Consumer) count(ctx context.Context, outcome string, n int) {
	if n > 0 {
		c.messages.Add(ctx, int64(n), metric.WithAttributes(attribute.String("consumer", c.cfg.Durable), attribute.String("outcome", outcome)))
	}
}

// fail decides what happens to a batch whose handler failed.
func (c *Consumer) fail(ctx context.Context, batch []jetstream.Msg, err error) {
	if ctx.Err() != nil {
		// Stopped mid-batch (shutdown, or past the batch's deadline): that
		// says nothing about the messages, so they are redelivered, never
		// split or dead-lettered.
		reason := "shutdown"
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			reason = "late"
			c.log.WarnContext(ctx, "batch took longer than half of AckWait; retrying it", "messages", len(batch), "error", err)
		}
		c.retry(context.WithoutCancel(ctx), batch, reason)
		return
	}
	if errors.Is(err, ErrNotOwned) {
		c.log.WarnContext(ctx, "batch not committed: another replica took the consumer over", "messages", len(batch))
		c.retry(ctx, batch, "not_owned")
		return
	}
	if c.cfg.Healthy != nil {
		if herr := c.cfg.Healthy(ctx); herr != nil {
			c.log.WarnContext(ctx, "handler failed while its sink is unhealthy; retrying later", "error", err, "health", herr, "messages", len(batch))
			c.retry(ctx, batch, "sink_down")
			return
		}
	}
	if len(batch) == 1 {
		c.failOne(ctx, batch[0], err)
		return
	}
	// Split the batch in halves to find the messages that fail alone, so
	// one poison message does not hold back the rest.
	mid := len(batch) / 2
	for _, half := range [][]jetstream.Msg{batch[:mid], batch[mid:]} {
		if herr := c.handler(ctx, half); herr != nil {
			c.fail(ctx, half, herr)
		} else {
			c.ack(ctx, half)
		}
	}
}

// retry naks msgs for redelivery after a delay that grows with their
// deliveries. reason labels the count: failed, sink_down, late, shutdown.
func (c *Consumer) retry(ctx context.Context, msgs []jetstream.Msg, reason string) {
	for _, m := range msgs {
		n := uint64(1)
		if md, err := m.Metadata(); err == nil {
			n = md.NumDelivered
		}
		delay := c.cfg.NakDelay(n)
		switch reason {
		case "shutdown", "late", "not_owned":
			delay = c.cfg.NakDelay(1) // not the message's doing: back soon
		case "sink_down":
			delay = c.cfg.OutageDelay
		}
		if err := m.NakWithDelay(delay); err != nil {
			c.log.WarnContext(ctx, "nak failed; the message is redelivered after AckWait", "error", err)
		}
	}
	if len(msgs) > 0 {
		c.messages.Add(ctx, int64(len(msgs)), metric.WithAttributes(attribute.String("consumer", c.cfg.Durable),
			attribute.String("outcome", "retried"), attribute.String("reason", reason)))
	}
}

// maxTrackedFailures bounds the failure counts kept; past it they start
// over (a message then gets MaxDeliver more tries, which is still finite).
const maxTrackedFailures = 100_000

func (c *Consumer) failOne(ctx context.Context, m jetstream.Msg, err error) {
	md, merr := m.Metadata()
	if merr != nil {
		c.log.WarnContext(ctx, "message failed; retrying later", "subject", m.Subject(), "error", err)
		c.retry(ctx, []jetstream.Msg{m}, "failed")
		return
	}
	if len(c.failures) >= maxTrackedFailures {
		clear(c.failures)
	}
	c.failures[md.Sequence.Stream]++
	failures := c.failures[md.Sequence.Stream]
	if failures < c.cfg.MaxDeliver {
		c.log.WarnContext(ctx, "message failed; retrying later", "subject", m.Subject(), "failures", failures, "error", err)
		c.retry(ctx, []jetstream.Msg{m}, "failed")
		return
	}
	dl := &nats.Msg{
		Subject: DeadLetterSubject(c.cfg.Stream, c.cfg.Durable),
		Data:    m.Data(),
		Header:  nats.Header{},
	}
	for k, v := range m.Headers() {
		dl.Header[k] = v
	}
	reason := err.Error()
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	dl.Header.Set(HeaderDeadLetterReason, reason)
	dl.Header.Set(HeaderOriginalSubject, m.Subject())
	dl.Header.Set(HeaderOriginalSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(HeaderDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(HeaderFailures, strconv.Itoa(failures))
	dl.Header.Del(nats.MsgIdHdr)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Dedup by origin, so a redelivered poison message is dead-lettered once.
	id := "dl:" + c.cfg.Stream + ":" + c.cfg.Durable + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	if _, perr := c.bus.JS.PublishMsg(pctx, dl, jetstream.WithMsgID(id)); perr != nil {
		c.log.ErrorContext(ctx, "dead-letter publish failed; retrying the message", "error", perr)
		c.retry(ctx, []jetstream.Msg{m}, "failed")
		return
	}
	delete(c.failures, md.Sequence.Stream)
	if terr := m.TermWithReason("dead-lettered"); terr != nil {
		c.log.WarnContext(ctx, "term after dead-letter failed", "error", terr)
	}
	c.log.ErrorContext(ctx, "message dead-lettered", "subject", m.Subject(), "stream_seq", md.Sequence.Stream,
		"failures", failures, "deliveries", md.NumDelivered, "dead_letter_subject", dl.Subject, "error", err)
	c.count(ctx, "dead_lettered", 1)
}
