package app

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/service"
	"github.com/stickpoint/stickpoint/pkg/signals"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
	ingest "github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
	milestones "github.com/stickpoint/stickpoint/services/milestones/migrations"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// pipeline is ingest and health scoring in one process, wired as
// `stickpoint dev` wires them, with their default configuration.
type pipeline struct {
	url, writeKey string
	nc            *nats.Conn
	db            chstore.Store
	accounts      accountsv1.AccountsServiceClient
	token         string
}

func startPipeline(b *testing.B, engine string) *pipeline {
	b.Helper()
	ctx := b.Context()
	db := testutil.Store(b, engine)
	if _, err := chstore.Migrate(ctx, db, ingest.Component, ingest.Migrations); err != nil {
		b.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, signals.Component, signals.Migrations); err != nil {
		b.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, db, "milestones", milestones.FS); err != nil {
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
	tenant, err := reg.CreateTenant(ctx, "bench", "", authv1.Scope_SCOPE_READ, authv1.Scope_SCOPE_WRITE, authv1.Scope_SCOPE_ADMIN)
	if err != nil {
		b.Fatal(err)
	}
	ing, err := ingest.New(ingest.DefaultConfig(), bus, db, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	hs, err := New(ctx, DefaultConfig(), bus, db, reg, log)
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
	hs.Register(srv)
	web := httptest.NewUnstartedServer(mux)
	web.Config = service.HTTPServer(mux)
	web.Start()
	b.Cleanup(web.Close)
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = ing.Run(runCtx) })
	wg.Go(func() { _ = hs.Run(runCtx) })
	wg.Go(func() { _ = srv.Serve(runCtx) })
	b.Cleanup(func() { cancel(); wg.Wait() })
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return &pipeline{url: web.URL, writeKey: tenant.WriteKey.Key, nc: bus.NC, db: db, accounts: accountsv1.NewAccountsServiceClient(conn), token: tenant.Secret}
}

func (p *pipeline) post(b *testing.B, body string) {
	testutil.Post(b, p.url+"/v1/track", p.writeKey, body)
}

// maxRate is ingest's maximum end to end (events stored in ClickHouse).
func (p *pipeline) maxRate(b *testing.B, duration time.Duration) float64 {
	stored := func(ctx context.Context) (uint64, error) {
		r, err := p.db.Query(ctx, "SELECT count() FROM events WHERE tenant_id = 'bench' AND name = 'Report Built'")
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
	res, err := loadgen.Run(b.Context(), loadgen.Options{URL: p.url, WriteKey: p.writeKey, Concurrency: 8, Batch: 500, Duration: duration, RunID: "max",
		DrainTimeout: time.Minute, Stored: func(ctx context.Context) (uint64, error) {
			n, err := stored(ctx)
			return n - before, err
		}})
	if err != nil {
		b.Fatal(err)
	}
	return res.StoredPerSec
}

// underLoad runs f while ingest takes rate events/s.
func (p *pipeline) underLoad(b *testing.B, rate float64, duration time.Duration, f func()) float64 {
	loadCtx, stop := context.WithCancel(b.Context())
	var res loadgen.Result
	var wg sync.WaitGroup
	wg.Go(func() {
		res, _ = loadgen.Run(loadCtx, loadgen.Options{URL: p.url, WriteKey: p.writeKey, Concurrency: 8, Batch: 500, Duration: duration + 2*time.Second,
			Rate: rate, RunID: fmt.Sprint("half-", time.Now().UnixNano())})
	})
	time.Sleep(500 * time.Millisecond)
	f()
	stop()
	wg.Wait()
	return res.EventsPerSec
}

// BenchmarkHealthLatency measures, on the embedded engine:
//   - an event to its account's updated score, idle (target p99 under 1 s);
//   - a "Cancellation Requested" event to its signal on SIGNALS while
//     ingest runs at half its maximum (target p99 under 1 s);
//   - accounts.v1 Get over gRPC while ingest runs at half its maximum
//     (target p99 under 50 ms), of quiet accounts and of the busy ones the
//     load writes to, in turn.
//
// STICKPOINT_BENCH_DURATION sets each phase's length (default 10s).
func BenchmarkHealthLatency(b *testing.B) {
	duration := testutil.BenchDuration(10 * time.Second)
	p := startPipeline(b, chstore.EngineEmbedded)
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	detected := map[string]time.Time{}
	sub, err := p.nc.Subscribe("signals.bench.cancellation_requested", func(m *nats.Msg) {
		// The first arrival only: the scorer publishes the same signal
		// again once the event is stored, and a core subscription sees that
		// duplicate too (the stream drops it, the subject doesn't).
		if s, err := signals.Decode(m.Data); err == nil {
			mu.Lock()
			if _, seen := arrived[s.GetAccountId()]; !seen {
				arrived[s.GetAccountId()] = time.Now()
				detected[s.GetAccountId()] = s.GetDetectedAt().AsTime()
			}
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	ctx := metadata.AppendToOutgoingContext(b.Context(), "authorization", "Bearer "+p.token)

	for b.Loop() {
		// Idle: an event for a new account, until its score is stored.
		var scored []time.Duration
		var quiet []string // the accounts scored, for the Gets
		for i, deadline := 0, time.Now().Add(duration); time.Now().Before(deadline); i++ {
			account := fmt.Sprintf("score-%d-%d", time.Now().UnixNano(), i)
			quiet = append(quiet, account)
			sent := time.Now()
			p.post(b, fmt.Sprintf(`{"userId":"u","event":"Report Built","context":{"groupId":"%s"}}`, account))
			for {
				if _, err := p.accounts.Get(ctx, &accountsv1.GetRequest{AccountId: account}); err == nil {
					break
				}
				if time.Since(sent) > 30*time.Second {
					b.Fatalf("%s not scored within 30 s", account)
				}
				time.Sleep(5 * time.Millisecond)
			}
			scored = append(scored, time.Since(sent))
			time.Sleep(50 * time.Millisecond)
		}
		testutil.ReportLatencies(b, "event-to-score-idle", scored)

		rate := p.maxRate(b, duration/2) / 2
		// Under half load: cancellation requests, and Gets of an account.
		sent := map[string]time.Time{}
		load := p.underLoad(b, rate, duration, func() {
			for i, deadline := 0, time.Now().Add(duration); time.Now().Before(deadline); i++ {
				account := fmt.Sprintf("cancel-%d-%d", time.Now().UnixNano(), i)
				sent[account] = time.Now()
				p.post(b, fmt.Sprintf(`{"userId":"u","event":"Cancellation Requested","context":{"groupId":"%s"}}`, account))
				time.Sleep(100 * time.Millisecond)
			}
		})
		var cancels []time.Duration
		for wait := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			cancels = cancels[:0]
			for a, at := range sent {
				if got, ok := arrived[a]; ok {
					cancels = append(cancels, got.Sub(at))
				}
			}
			mu.Unlock()
			if len(cancels) == len(sent) {
				break
			}
			if time.Now().After(wait) {
				b.Fatalf("%d of %d cancellation signals within 30 s", len(cancels), len(sent))
			}
		}
		testutil.ReportLatencies(b, "cancel-to-signal-loaded", cancels)
		var det []time.Duration
		for a, at := range sent {
			det = append(det, detected[a].Sub(at))
		}
		testutil.ReportLatencies(b, "cancel-to-detected", det) // the signal's detected_at: how much is before the service saw it

		// Gets in turn of a quiet account (scored in the idle phase) and a
		// busy one (one of the 500 the load writes to, rescored every round).
		var quietGets, busyGets []time.Duration
		p.underLoad(b, rate, duration, func() {
			for i, deadline := 0, time.Now().Add(duration); time.Now().Before(deadline); i++ {
				account, into := quiet[i/2%len(quiet)], &quietGets
				if i%2 == 1 {
					account, into = fmt.Sprintf("acct-%d", i/2%500), &busyGets
				}
				began := time.Now()
				if _, err := p.accounts.Get(ctx, &accountsv1.GetRequest{AccountId: account}); err != nil {
					b.Fatal(err)
				}
				*into = append(*into, time.Since(began))
				time.Sleep(10 * time.Millisecond)
			}
		})
		testutil.ReportLatencies(b, "get-quiet-loaded", quietGets)
		testutil.ReportLatencies(b, "get-busy-loaded", busyGets)
		b.Logf("ingest maximum %.0f events/s stored end to end; the loads ran at %.0f events/s", 2*rate, load)
		b.ReportMetric(load, "load-events/s")
	}
}
