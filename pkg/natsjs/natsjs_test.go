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
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 20 }, 10*time.Second, 10*time.Millisecond)
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
	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	info, err := dl.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing is dead-lettered for a failure that passes")
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
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-outage", MaxBatch: 5, MaxWait: 10 * time.Millisecond, NakDelay: fastRetry, MaxDeliver: 2, Healthy: healthy}, rec.handle)

	// Well past MaxDeliver deliveries while the sink is down.
	require.Eventually(t, func() bool { return rec.calls.Load() >= 6 }, 10*time.Second, 10*time.Millisecond)
	down.Store(false)
	require.Eventually(t, func() bool { return rec.count() == 5 }, 10*time.Second, 10*time.Millisecond)
	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	info, err := dl.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs)
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

func TestConsumerStopsWhenDeleted(t *testing.T) {
	bus := testutil.NATS(t)
	rec := newRecorder(nil)
	cfg := natsjs.ConsumerConfig{Stream: natsjs.EventsStream, Durable: "test-deleted", MaxWait: 10 * time.Millisecond}
	c, err := natsjs.NewConsumer(bus, cfg, rec.handle, testutil.Logger(t))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- c.Run(t.Context()) }()
	require.Eventually(t, func() bool {
		_, err := bus.JS.Consumer(t.Context(), natsjs.EventsStream, "test-deleted")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, bus.JS.DeleteConsumer(t.Context(), natsjs.EventsStream, "test-deleted"))
	select {
	case err := <-done:
		require.Error(t, err, "a deleted consumer is an error, not a silent stop")
	case <-time.After(15 * time.Second):
		t.Fatal("consumer did not notice its deletion")
	}
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

	dl, err := bus.JS.Stream(t.Context(), natsjs.DeadLetterStream)
	require.NoError(t, err)
	info, err := dl.Info(t.Context())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing dead-lettered by a shutdown")

	rec := newRecorder(nil)
	runConsumer(t, bus, natsjs.ConsumerConfig{Durable: "test-cutoff", MaxWait: time.Millisecond, MaxDeliver: 1}, rec.handle)
	require.Eventually(t, func() bool { return rec.count() == 1 }, 10*time.Second, 10*time.Millisecond, "redelivered after the restart")
}
