package app

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// startPipeline runs ingest and milestone tracking in one process, wired
// as `stickpoint dev` wires them, with their default configuration.
func startPipeline(b *testing.B, engine string) (url, writeKey string, nc *nats.Conn, js *journeys.Store, db chstore.Store) {
	b.Helper()
	ctx := b.Context()
	db = testutil.Store(b, engine)
	if _, err := chstore.Migrate(ctx, db, ingest.Component, ingest.Migrations); err != nil {
		b.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, signals.Component, signals.Migrations); err != nil {
		b.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, Component, Migrations); err != nil {
		b.Fatal(err)
	}
	bus := testutil.NATS(b)
	log := testutil.Logger(b)
	reg, err := tenancy.Open(ctx, bus, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(reg.Close)
	tenant, err := reg.CreateTenant(ctx, "bench", "")
	if err != nil {
		b.Fatal(err)
	}
	ing, err := ingest.New(ingest.DefaultConfig(), bus, db, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	ms, err := New(ctx, DefaultConfig(), bus, db, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	gcfg := grpcserver.DefaultConfig()
	gcfg.Addr = "127.0.0.1:0"
	srv, err := grpcserver.New(gcfg, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	ing.Register(mux, srv)
	ms.Register(srv)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config = service.HTTPServer(mux)
	hs.Start()
	b.Cleanup(hs.Close)
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = ing.Run(runCtx) })
	wg.Go(func() { _ = ms.Run(runCtx) })
	b.Cleanup(func() { cancel(); wg.Wait() })
	if js, err = journeys.Open(ctx, bus); err != nil {
		b.Fatal(err)
	}
	return hs.URL, tenant.WriteKey.Key, bus.NC, js, db
}

// BenchmarkEventToSignal measures the time from posting an event that
// reaches a milestone to its milestone_reached signal on SIGNALS (what
// alerting consumes), on the embedded engine: idle (target p99 under 1 s),
// and while ingest runs at half its maximum rate (target p99 under 2 s).
// STICKPOINT_BENCH_DURATION sets each phase's length (default 10s).
func BenchmarkEventToSignal(b *testing.B) {
	duration := testutil.BenchDuration(10 * time.Second)
	url, key, nc, js, db := startPipeline(b, chstore.EngineEmbedded)
	// The load's accounts follow the journey too: they reach "reporting"
	// and keep the evaluator busy.
	if _, _, err := js.Put(b.Context(), "bench", []byte("id: bench\nmilestones:\n"+
		"  - {id: activated, event: Activated, target: 1d}\n"+
		"  - {id: reporting, event: Report Built, target: 7d, threshold: {count: 3}}\n")); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	sub, err := nc.Subscribe("signals.bench.milestone_reached", func(m *nats.Msg) {
		s, err := signals.Decode(m.Data)
		if err == nil && s.GetOnboarding().GetMilestoneId() == "activated" {
			mu.Lock()
			arrived[s.GetAccountId()] = time.Now()
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })

	probe := func(phase string) []time.Duration {
		sent := map[string]time.Time{}
		deadline := time.Now().Add(duration)
		for i := 0; time.Now().Before(deadline); i++ {
			account := fmt.Sprintf("%s-%d", phase, i)
			body := fmt.Sprintf(`{"userId":"u","event":"Activated","messageId":"%s","context":{"groupId":"%s"}}`, account, account)
			sent[account] = time.Now()
			testutil.Post(b, url+"/v1/track", key, body)
			time.Sleep(100 * time.Millisecond)
		}
		var lat []time.Duration
		wait := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			lat = lat[:0]
			for a, at := range sent {
				if got, ok := arrived[a]; ok {
					lat = append(lat, got.Sub(at))
				}
			}
			mu.Unlock()
			if len(lat) == len(sent) {
				break
			}
			if time.Now().After(wait) {
				b.Fatalf("%s: %d of %d signals within 30 s", phase, len(lat), len(sent))
			}
			time.Sleep(50 * time.Millisecond)
		}
		slices.Sort(lat)
		return lat
	}
	for b.Loop() {
		testutil.ReportLatencies(b, "idle", probe("idle"))
		// Ingest's maximum end to end (stored in ClickHouse), then half
		// of it with the probes.
		stored := func(ctx context.Context) (uint64, error) {
			r, err := db.Query(ctx, "SELECT count() FROM events WHERE tenant_id = 'bench' AND name = 'Report Built'")
			var n uint64
			if err == nil && r.Next() {
				err = r.Scan(&n)
			}
			return n, err
		}
		before, err := stored(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		max, err := loadgen.Run(b.Context(), loadgen.Options{URL: url, WriteKey: key, Concurrency: 8, Batch: 500, Duration: duration / 2, RunID: "max",
			DrainTimeout: time.Minute, Stored: func(ctx context.Context) (uint64, error) {
				n, err := stored(ctx)
				return n - before, err
			}})
		if err != nil {
			b.Fatal(err)
		}
		loadCtx, stop := context.WithCancel(b.Context())
		var half loadgen.Result
		var wg sync.WaitGroup
		wg.Go(func() {
			half, _ = loadgen.Run(loadCtx, loadgen.Options{URL: url, WriteKey: key, Concurrency: 8, Batch: 500, Duration: duration + time.Second,
				Rate: max.StoredPerSec / 2, RunID: "half"})
		})
		time.Sleep(500 * time.Millisecond)
		lat := probe("loaded")
		stop()
		wg.Wait()
		testutil.ReportLatencies(b, "loaded", lat)
		b.Logf("ingest maximum %.0f events/s stored end to end; the load ran at %.0f events/s", max.StoredPerSec, half.EventsPerSec)
		b.ReportMetric(half.EventsPerSec, "load-events/s")
	}
}
