package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.MainWithLeakCheck(m)) }

func publish(t *testing.T, bus *natsjs.Bus, n int, body func(i int) string) {
	t.Helper()
	for i := range n {
		_, err := bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", "track"), []byte(body(i)), jetstream.WithMsgID("acme:"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
}

// recorder is a handler that records what it handled, failing as told.
type recorder struct {
	mu      sync.Mutex
	handled map[string]int
	fail    func(body string) bool
	calls   atomic.Int64
}

func newRecorder(fail func(string) bool) *recorder {
	return &recorder{handled: map[string]int{}, fail: fail}
}

func (r *recorder) handle(_ context.Context, msgs []jetstream.Msg) error {
	r.calls.Add(1)
	for _, m := range msgs {
		if r.fail != nil && r.fail(string(m.Data())) {
			return errors.New("cannot handle " + string(m.Data()))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		r.handled[string(m.Data())]++
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handled)
}

func runConsumer(t *testing.T, bus *natsjs.Bus, cfg natsjs.ConsumerConfig, h natsjs.Handler) (stop func() error, c *natsjs.Consumer) {
	t.Helper()
	cfg.Stream = natsjs.EventsStream
	c, err := natsjs.NewConsumer(bus, cfg, h, testutil.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop, c
}

// consumerInfo is the consumer's state, or an empty one while the consumer
// does not exist yet (Run declares it asynchronously), so polls can use it.
func consumerInfo(t *testing.T, bus *natsjs.Bus, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := bus.JS.Consumer(t.Context(), natsjs.EventsStream, durable)
	if err != nil {
		return &jetstream.ConsumerInfo{}
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		return &jetstream.ConsumerInfo{}
	}
	return info
}

func fastRetry(uint64) time.Duration { return 20 * time.Millisecond }

func TestConsumerAcksAfterSuccess(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 50, func(i int) string { return "e" + strconv.Itoa(i) })
	rec := newRecorder(nil)
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-ok", MaxBatch: 20, MaxWait: 20 * time.Millisecond}, rec.handle)

	require.Eventually(t, func() bool { return rec.count() == 50 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		info := consumerInfo(t, bus, "test-ok")
		return info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 50
	}, 10*time.Second, 10*time.Millisecond)
	for body, n := range rec.handled {
		require.Equal(t, 1, n, "%s handled once", body)
	}
}

func TestConsumerBatchesByBytes(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 20, func(i int) string { return fmt.Sprintf("%04d", i) + strings.Repeat("x", 996) }) // 1,000 bytes each
	var mu sync.Mutex
	var sizes []int
	seen := map[string]bool{}
	handle := func(_ context.Context, msgs []jetstream.Msg) error {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(msgs))
		for _, m := range msgs {
			seen[string(m.Data()[:4])] = true
		}
		return nil
	}
	// Room for 100 messages by count, 2,500 bytes by size: batches close at
	// the third message, and the client fetches about that much ahead.
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-bytes", MaxBatch: 100, MaxBatchBytes: 2500, MaxWait: 50 * time.Millisecond}, handle)
	if !assert.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 20 }, 10*time.Second, 10*time.Millisecond) {
		info := consumerInfo(t, bus, "test-bytes")
		mu.Lock()
		t.Fatalf("saw %d of 20 messages in batches %v; consumer delivered %d, ack floor %d, pending %d, waiting pulls %d",
			len(seen), sizes, info.Delivered.Stream, info.AckFloor.Stream, info.NumPending, info.NumWaiting)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range sizes {
		require.LessOrEqual(t, n, 3, "batch sizes %v", sizes)
	}
	require.GreaterOrEqual(t, len(sizes), 7, "20 messages in batches of at most 3: %v", sizes)
}

func TestConsumerRedeliversAfterFailure(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 10, func(i int) string { return "e" + strconv.Itoa(i) })
	var failures atomic.Int64
	rec := newRecorder(func(string) bool { return failures.Add(1) <= 3 }) // the sink fails three times, then recovers
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-retry", MaxBatch: 10, MaxWait: 10 * time.Millisecond, NakDelay: fastRetry, MaxDeliver: 10}, rec.handle)

	require.Eventually(t, func() bool { return rec.count() == 10 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return consumerInfo(t, bus, "test-retry").NumAckPending == 0 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, deadLettered(t, bus), "nothing is dead-lettered for a failure that passes")
}

func TestConsumerDeadLettersPoisonAndTheRestFlows(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 40, func(i int) string {
		if i == 17 {
			return "poison"
		}
		return "e" + strconv.Itoa(i)
	})
	rec := newRecorder(func(body string) bool { return body == "poison" })
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-poison", MaxBatch: 40, MaxWait: 10 * time.Millisecond, NakDelay: fastRetry, MaxDeliver: 3}, rec.handle)

	require.Eventually(t, func() bool { return rec.count() == 39 }, 10*time.Second, 10*time.Millisecond, "every good message flows")
	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(t.Context())
		return err == nil && info.State.Msgs == 1
	}, 10*time.Second, 10*time.Millisecond)

	msg, err := dl.GetLastMsgForSubject(t.Context(), natsjs.DeadLetterSubject(natsjs.EventsStream, "test-poison"))
	require.NoError(t, err)
	require.Equal(t, "poison", string(msg.Data))
	require.Equal(t, "3", msg.Header.Get(natsjs.HeaderDeliveries))
	require.Equal(t, "3", msg.Header.Get(natsjs.HeaderFailures))
	require.Equal(t, "18", msg.Header.Get(natsjs.HeaderOriginalSeq))
	require.Contains(t, msg.Header.Get(natsjs.HeaderDeadLetterReason), "cannot handle poison")
	require.Eventually(t, func() bool {
		info := consumerInfo(t, bus, "test-poison")
		return info.NumAckPending == 0 && info.NumRedelivered == 0
	}, 10*time.Second, 10*time.Millisecond, "the poison message is terminated, not redelivered")
	for body, n := range rec.handled {
		require.Equal(t, 1, n, "%s handled once", body)
	}
}

func TestConsumerNeverDeadLettersDuringAnOutage(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 5, func(i int) string { return "e" + strconv.Itoa(i) })
	var down atomic.Bool
	down.Store(true)
	rec := newRecorder(func(string) bool { return down.Load() })
	healthy := func(context.Context) error {
		if down.Load() {
			return errors.New("sink down")
		}
		return nil
	}
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-outage", MaxBatch: 5, MaxWait: 10 * time.Millisecond, NakDelay: fastRetry, MaxDeliver: 2, Healthy: healthy, OutageDelay: 20 * time.Millisecond}, rec.handle)

	// Well past MaxDeliver deliveries while the sink is down.
	require.Eventually(t, func() bool { return rec.calls.Load() >= 6 }, 10*time.Second, 10*time.Millisecond)
	down.Store(false)
	require.Eventually(t, func() bool { return rec.count() == 5 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, deadLettered(t, bus))
}

func TestConsumerDrainsOnShutdown(t *testing.T) {
	bus := testutil.NATS(t)
	rec := newRecorder(nil)
	// A long MaxWait keeps fetched messages in a partial batch until shutdown.
	stop, c := runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-drain", MaxBatch: 100, MaxWait: time.Hour}, rec.handle)
	publish(t, bus, 7, func(i int) string { return "e" + strconv.Itoa(i) })
	// Wait until the runner holds them (the server counting them delivered
	// is not enough: they may still be on the wire, and are then redelivered
	// after AckWait rather than drained).
	require.Eventually(t, func() bool { return c.InHand() == 7 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, rec.count(), "the batch is still open")

	require.NoError(t, stop())
	require.Equal(t, 7, rec.count(), "shutdown handles the fetched messages")
	// The drain flushes its acks, so the server has them when Run returns;
	// JetStream applies acks on the consumer's own goroutine, so the
	// consumer's state catches up a moment later (CI once read it first).
	require.Eventually(t, func() bool {
		info := consumerInfo(t, bus, "test-drain")
		return info.NumAckPending == 0 && info.AckFloor.Stream == 7
	}, 10*time.Second, 10*time.Millisecond, "every drained message is acked")
}

// A consumer deleted under the runner is declared again, and consuming
// goes on; it is never a silent stop.
func TestConsumerDeclaredAgainWhenDeleted(t *testing.T) {
	bus := testutil.NATS(t)
	rec := newRecorder(nil)
	var epochs sync.Map
	handle := func(ctx context.Context, msgs []jetstream.Msg) error {
		epochs.Store(natsjs.Epoch(ctx), true)
		return rec.handle(ctx, msgs)
	}
	_, c := runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-deleted", MaxWait: 10 * time.Millisecond,
		RestartDelay: func(uint64) time.Duration { return 10 * time.Millisecond }}, handle)
	require.Eventually(t, func() bool { return c.Err() == nil }, 10*time.Second, 10*time.Millisecond)
	publish(t, bus, 1, func(int) string { return "before" })
	require.Eventually(t, func() bool { return rec.count() == 1 }, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, bus.JS.DeleteConsumer(t.Context(), natsjs.EventsStream, "test-deleted"))
	require.Eventually(t, func() bool { return c.Err() != nil }, 15*time.Second, 10*time.Millisecond, "the loss shows (readiness)")
	require.Eventually(t, func() bool { return c.Err() == nil }, 15*time.Second, 10*time.Millisecond, "declared again")
	_, err := bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", "track"), []byte("after"), jetstream.WithMsgID("after"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return rec.count() == 2 }, 15*time.Second, 10*time.Millisecond, "consuming goes on")
	n := 0
	epochs.Range(func(any, any) bool { n++; return true })
	require.Equal(t, 2, n, "the consumer declared again hands out a new epoch")
}

// When the consumer can't be declared again (its stream is gone), Run
// gives up with an error after MaxRestarts attempts, so the process exits
// instead of answering while nothing is consumed.
func TestConsumerGivesUpWhenItsStreamIsGone(t *testing.T) {
	bus := testutil.NATS(t)
	_, err := bus.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "DOOMED", Subjects: []string{"doomed.>"}})
	require.NoError(t, err)
	c, err := natsjs.NewConsumer(bus, natsjs.ConsumerConfig{Stream: "DOOMED", Durable: "test-doomed", MaxWait: 10 * time.Millisecond,
		MaxRestarts: 2, RestartDelay: func(uint64) time.Duration { return 10 * time.Millisecond }}, newRecorder(nil).handle, testutil.Logger(t))
	require.NoError(t, err)
	require.ErrorContains(t, c.Err(), "not started")
	done := make(chan error, 1)
	go func() { done <- c.Run(t.Context()) }()
	require.Eventually(t, func() bool { return c.Err() == nil }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, bus.JS.DeleteStream(t.Context(), "DOOMED"))
	select {
	case err := <-done:
		require.Error(t, err)
		require.Error(t, c.Err())
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not give up")
	}
}

// A long outage redelivers messages many times; none of those deliveries
// count towards dead-lettering. A poison message met afterwards still gets
// its MaxDeliver real tries.
func TestDeadLetteringCountsOnlyRealFailures(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 3, func(i int) string { return []string{"a", "poison", "b"}[i] })
	var down atomic.Bool
	down.Store(true)
	rec := newRecorder(func(body string) bool { return down.Load() || body == "poison" })
	healthy := func(context.Context) error {
		if down.Load() {
			return errors.New("sink down")
		}
		return nil
	}
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-real", MaxBatch: 3, MaxWait: 10 * time.Millisecond, NakDelay: fastRetry,
		MaxDeliver: 3, Healthy: healthy, OutageDelay: 20 * time.Millisecond}, rec.handle)
	require.Eventually(t, func() bool { return rec.calls.Load() >= 8 }, 10*time.Second, 10*time.Millisecond, "well past MaxDeliver deliveries")
	down.Store(false)

	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := dl.Info(t.Context())
		return err == nil && info.State.Msgs == 1
	}, 10*time.Second, 10*time.Millisecond)
	msg, err := dl.GetLastMsgForSubject(t.Context(), natsjs.DeadLetterSubject(natsjs.EventsStream, "test-real"))
	require.NoError(t, err)
	require.Equal(t, "poison", string(msg.Data))
	require.Equal(t, "3", msg.Header.Get(natsjs.HeaderFailures), "three real failures")
	deliveries, err := strconv.Atoi(msg.Header.Get(natsjs.HeaderDeliveries))
	require.NoError(t, err)
	require.Greater(t, deliveries, 3, "the outage's deliveries did not count")
	require.Equal(t, 2, rec.count(), "the good messages flow")
}

// A handler gets half of AckWait from when the runner received its oldest
// message; past it, the batch is retried (never dead-lettered), before the
// server would redeliver it to another replica.
func TestSlowBatchIsRetriedBeforeAckWait(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 1, func(int) string { return "slow" })
	var attempts atomic.Int64
	var firstBudget atomic.Int64
	rec := newRecorder(nil)
	handler := func(ctx context.Context, msgs []jetstream.Msg) error {
		if attempts.Add(1) == 1 {
			dl, ok := ctx.Deadline()
			require.True(t, ok, "the handler's context has a deadline")
			firstBudget.Store(int64(time.Until(dl)))
			<-ctx.Done() // an insert slower than the budget
			return ctx.Err()
		}
		return rec.handle(ctx, msgs)
	}
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-slow", MaxBatch: 1, MaxWait: time.Millisecond, AckWait: 2 * time.Second,
		MaxDeliver: 1, NakDelay: fastRetry}, handler)
	require.Eventually(t, func() bool { return rec.count() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.LessOrEqual(t, time.Duration(firstBudget.Load()), time.Second, "at most half of AckWait")
	require.Equal(t, int64(2), attempts.Load(), "retried once, at once")
	require.Zero(t, deadLettered(t, bus), "a slow batch is not a poison message")
}

// With Pinned, one runner at a time gets the messages; another replica on
// the same durable stands by and takes over when the first stops.
func TestPinnedConsumerDeliversToOneReplicaAtATime(t *testing.T) {
	bus := testutil.NATS(t)
	a, b := newRecorder(nil), newRecorder(nil)
	cfg := natsjs.ConsumerConfig{Durable: "test-pinned", MaxBatch: 10, MaxWait: 5 * time.Millisecond, AckWait: 3 * time.Second, Pinned: true}
	stopA, ca := runConsumer(t, bus, cfg, a.handle)
	require.Eventually(t, func() bool { return ca.Err() == nil }, 10*time.Second, 10*time.Millisecond)
	stopB, cb := runConsumer(t, bus, cfg, b.handle)
	require.Eventually(t, func() bool { return cb.Err() == nil }, 10*time.Second, 10*time.Millisecond)

	for i := range 30 {
		publish1(t, bus, "first-"+strconv.Itoa(i))
		time.Sleep(2 * time.Millisecond) // spread over many pulls
	}
	require.Eventually(t, func() bool { return a.count()+b.count() == 30 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, a.count() == 30 || b.count() == 30, "one replica got them all: %d and %d", a.count(), b.count())
	pinned, standby, stopPinned := a, b, stopA
	if b.count() == 30 {
		pinned, standby, stopPinned = b, a, stopB
	}
	require.NoError(t, stopPinned())
	for i := range 10 {
		publish1(t, bus, "second-"+strconv.Itoa(i))
	}
	require.Eventually(t, func() bool { return standby.count() == 10 }, 2*time.Second, 10*time.Millisecond,
		"the standby took over within AckWait (3 s): the drain hands the pin over")
	require.Equal(t, 30, pinned.count())
}

func publish1(t *testing.T, bus *natsjs.Bus, body string) {
	t.Helper()
	_, err := bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", "track"), []byte(body), jetstream.WithMsgID(body))
	require.NoError(t, err)
}

func TestTraceContextCrossesHeaders(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	traceID, _ := trace.TraceIDFromHex("0102030405060708090a0b0c0d0e0f10")
	spanID, _ := trace.SpanIDFromHex("0102030405060708")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	h := nats.Header{}
	natsjs.InjectTrace(trace.ContextWithSpanContext(t.Context(), sc), h)
	require.NotEmpty(t, h.Get("traceparent"))
	got := trace.SpanContextFromContext(natsjs.ExtractTrace(t.Context(), h))
	require.Equal(t, traceID, got.TraceID())
	require.Equal(t, spanID, got.SpanID())
}

func TestDedupIDIsHonoured(t *testing.T) {
	bus := testutil.NATS(t)
	for range 3 {
		_, err := bus.JS.Publish(t.Context(), natsjs.EventSubject("acme", "track"), []byte("x"), jetstream.WithMsgID("acme:m1"))
		require.NoError(t, err)
	}
	// Another tenant with the same messageId is not a duplicate.
	_, err := bus.JS.Publish(t.Context(), natsjs.EventSubject("globex", "track"), []byte("x"), jetstream.WithMsgID("globex:m1"))
	require.NoError(t, err)
	s, err := bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs)
}

func TestConfigValidate(t *testing.T) {
	cfg := natsjs.DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.StoreDir = ""
	require.ErrorContains(t, cfg.Validate(), "nats.store_dir")
	cfg = natsjs.DefaultConfig()
	cfg.Replicas = 0
	require.ErrorContains(t, cfg.Validate(), "nats.replicas")
	cfg = natsjs.DefaultConfig()
	cfg.ListenAddr = "nope"
	require.ErrorContains(t, cfg.Validate(), "nats.listen_addr")
	cfg = natsjs.DefaultConfig()
	cfg.DuplicateWindow = 0
	require.ErrorContains(t, cfg.Validate(), "nats.duplicate_window")
}

func TestExponentialDelay(t *testing.T) {
	d := natsjs.ExponentialDelay(time.Second, 10*time.Second)
	require.Equal(t, time.Second, d(1))
	require.Equal(t, 2*time.Second, d(2))
	require.Equal(t, 8*time.Second, d(4))
	require.Equal(t, 10*time.Second, d(50))
}

// A handler cut off by shutdown on a message's last allowed delivery must
// not dead-letter it: it is redelivered to the next consumer.
func TestShutdownMidBatchNeverDeadLetters(t *testing.T) {
	bus := testutil.NATS(t)
	publish(t, bus, 1, func(int) string { return "slow" })
	started := make(chan struct{}, 10)
	handler := func(ctx context.Context, _ []jetstream.Msg) error {
		started <- struct{}{}
		<-ctx.Done() // the work outlives the consumer
		return ctx.Err()
	}
	stop, _ := runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-cutoff", MaxBatch: 1, MaxWait: time.Millisecond,
		MaxDeliver: 1, DrainTimeout: 100 * time.Millisecond}, handler)
	<-started
	require.NoError(t, stop())

	require.Zero(t, deadLettered(t, bus), "nothing dead-lettered by a shutdown")

	rec := newRecorder(nil)
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-cutoff", MaxWait: time.Millisecond, MaxDeliver: 1}, rec.handle)
	require.Eventually(t, func() bool { return rec.count() == 1 }, 10*time.Second, 10*time.Millisecond, "redelivered after the restart")
}

// Ingest publishes on events.<tenant>.<type>; the stream files each tenant
// under one partition, computed as EventPartition computes it.
func TestEventsArePartitionedByTenant(t *testing.T) {
	bus := testutil.NATS(t)
	n := bus.Config().EventPartitions
	seen := map[int]bool{}
	for i := range 20 {
		tenant := "tenant-" + strconv.Itoa(i)
		ack, err := bus.JS.Publish(t.Context(), natsjs.EventSubject(tenant, "track"), []byte("x"), jetstream.WithMsgID(tenant))
		require.NoError(t, err)
		s, err := bus.JS.Stream(t.Context(), natsjs.EventsStream)
		require.NoError(t, err)
		msg, err := s.GetMsg(t.Context(), ack.Sequence)
		require.NoError(t, err)
		p := natsjs.EventPartition(tenant, n)
		require.Equal(t, fmt.Sprintf("events.%d.%s.track", p, tenant), msg.Subject)
		seen[p] = true
	}
	require.Len(t, seen, n, "20 tenants spread over every partition")
}

// EVENTS used to keep every event for 7 days on events.<tenant>.<type>;
// it is partitioned now. A stream whose consumers processed everything is
// replaced; one holding unprocessed events is kept, with an error that says
// what to do.
func TestEventsStreamMigratesToThePartitionedLayout(t *testing.T) {
	cfg := natsjs.DefaultConfig()
	cfg.StoreDir = t.TempDir()
	bus, err := natsjs.Connect(t.Context(), cfg, "test", testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(bus.Close)
	s, err := bus.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: natsjs.EventsStream, Subjects: []string{"events.>"}, MaxAge: 7 * 24 * time.Hour})
	require.NoError(t, err)
	for i := range 3 {
		_, err := bus.JS.Publish(t.Context(), "events.acme.track", []byte("e"+strconv.Itoa(i)))
		require.NoError(t, err)
	}
	cons, err := s.CreateConsumer(t.Context(), jetstream.ConsumerConfig{Durable: "ingest-writer", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	err = bus.EnsureStreams(t.Context())
	require.ErrorContains(t, err, "holds 3 messages its consumers have not processed")
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(3), info.State.Msgs, "nothing unprocessed is deleted")

	batch, err := cons.Fetch(3)
	require.NoError(t, err)
	for m := range batch.Messages() {
		require.NoError(t, m.DoubleAck(t.Context()))
	}
	require.NoError(t, bus.EnsureStreams(t.Context()))
	s, err = bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	got := s.CachedInfo()
	require.Zero(t, got.State.Msgs, "the old events are gone with the old stream")
	require.NotNil(t, got.Config.SubjectTransform)
	require.Equal(t, jetstream.DiscardNew, got.Config.Discard)
	require.Zero(t, got.Config.MaxAge, "no age limit: it would discard events not yet stored")
	require.NoError(t, bus.EnsureStreams(t.Context()), "and the new layout stays")
}

// PurgeAcked removes what the consumer acked, and only that: a message it
// could not handle stays in the stream, and so does everything after it on
// its subjects until it is acked.
func TestPurgeAckedKeepsOnlyWhatIsNotDone(t *testing.T) {
	bus := testutil.NATS(t)
	var fail atomic.Bool
	fail.Store(true)
	rec := newRecorder(func(body string) bool { return body == "e3" && fail.Load() })
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-purge", FilterSubjects: []string{"events.>"}, MaxBatch: 1,
		MaxWait: time.Millisecond, NakDelay: func(uint64) time.Duration { return time.Hour }, MaxDeliver: 100, PurgeAcked: true}, rec.handle)
	publish(t, bus, 6, func(i int) string { return "e" + strconv.Itoa(i) })
	s, err := bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	msgs := func() uint64 {
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		return info.State.Msgs
	}
	require.Eventually(t, func() bool { return rec.count() == 5 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return msgs() == 3 }, 10*time.Second, 50*time.Millisecond,
		"e0-e2 purged; e3 (not done) and e4-e5 (above the ack floor) kept")
	_, err = s.GetMsg(t.Context(), 4)
	require.NoError(t, err, "the message not handled is still there")
}

// A pinned replica that lost its pin while it worked on a batch (it stalled
// past AckWait, and a standby took over) learns it from Owned before it
// commits, and the batch goes back to whoever holds the pin.
func TestOwnedReportsALostPin(t *testing.T) {
	bus := testutil.NATS(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var attempts atomic.Int64
	var firstCheck atomic.Value
	rec := newRecorder(nil)
	handler := func(ctx context.Context, msgs []jetstream.Msg) error {
		if attempts.Add(1) == 1 {
			started <- struct{}{}
			<-release
			err := natsjs.Owned(ctx)
			firstCheck.Store(fmt.Sprint(err))
			if err != nil {
				return err
			}
		}
		if err := natsjs.Owned(ctx); err != nil {
			return err
		}
		return rec.handle(ctx, msgs)
	}
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-owned", MaxBatch: 1, MaxWait: time.Millisecond, AckWait: 20 * time.Second,
		NakDelay: fastRetry, Pinned: true}, handler)
	publish1(t, bus, "work")
	<-started
	s, err := bus.JS.Stream(t.Context(), natsjs.EventsStream)
	require.NoError(t, err)
	require.NoError(t, s.UnpinConsumer(t.Context(), "test-owned", "pinned")) // what a takeover does to this replica
	close(release)
	require.Eventually(t, func() bool { return rec.count() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, natsjs.ErrNotOwned.Error(), firstCheck.Load())
	require.Equal(t, 1, rec.handled["work"], "committed once, under the pin held")
}

// deadLettered is how many messages the DEADLETTER stream holds.
func deadLettered(t *testing.T, bus *natsjs.Bus) uint64 {
	t.Helper()
	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	info, err := dl.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}
