package sdk_test

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/sdk"
)

// endpoint is a scripted Segment-compatible endpoint: it answers with the
// statuses in script, then 200, and records the messageIds it accepted.
type endpoint struct {
	mu       sync.Mutex
	script   []int
	retryHdr string
	calls    atomic.Int64
	accepted map[string]int
	gzipped  bool
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.calls.Add(1)
	if user, _, _ := r.BasicAuth(); user != "wk_test" {
		w.WriteHeader(401)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		body = zr
	}
	var req struct {
		SentAt string `json:"sentAt"`
		Batch  []struct {
			MessageID, Type, Timestamp string
		} `json:"batch"`
	}
	if err := json.NewDecoder(body).Decode(&req); err != nil || req.SentAt == "" {
		w.WriteHeader(400)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gzipped = r.Header.Get("Content-Encoding") == "gzip"
	if len(e.script) > 0 {
		status := e.script[0]
		e.script = e.script[1:]
		if e.retryHdr != "" {
			w.Header().Set("Retry-After", e.retryHdr)
		}
		w.WriteHeader(status)
		return
	}
	for _, m := range req.Batch {
		if m.MessageID == "" || m.Timestamp == "" {
			w.WriteHeader(400)
			return
		}
		e.accepted[m.MessageID]++
	}
	_, _ = io.WriteString(w, `{"success":true}`)
}

func start(t *testing.T, e *endpoint, mutate func(*sdk.Config)) *sdk.Client {
	t.Helper()
	e.accepted = map[string]int{}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	cfg := sdk.Config{Endpoint: srv.URL, WriteKey: "wk_test", FlushInterval: 20 * time.Millisecond,
		RetryBase: time.Millisecond, RetryMax: 10 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := sdk.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBatchesGzipAndCloseFlushes(t *testing.T) {
	e := &endpoint{}
	c := start(t, e, func(c *sdk.Config) { c.BatchSize = 10; c.FlushInterval = time.Hour })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				if err := c.Track(sdk.Track{UserID: "u", Event: "e", Properties: map[string]any{"g": g, "i": i}}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if len(e.accepted) != 100 {
		t.Fatalf("accepted %d distinct events, want 100", len(e.accepted))
	}
	if !e.gzipped {
		t.Fatal("batches are gzipped by default")
	}
	if err := c.Track(sdk.Track{UserID: "u", Event: "late"}); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestRetriesWithTheSameMessageIDs(t *testing.T) {
	e := &endpoint{script: []int{503, 429, 500}, retryHdr: "0"}
	c := start(t, e, nil)
	if err := c.Track(sdk.Track{UserID: "u", Event: "e", MessageID: "m-1"}); err != nil {
		t.Fatal(err)
	}
	c.Flush()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if e.calls.Load() != 4 || e.accepted["m-1"] != 1 {
		t.Fatalf("calls %d, accepted %v", e.calls.Load(), e.accepted)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e := &endpoint{script: []int{429}, retryHdr: "1"}
	c := start(t, e, nil)
	start := time.Now()
	_ = c.Track(sdk.Track{UserID: "u", Event: "e"})
	c.Flush()
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("retried after %s, before Retry-After: 1", waited)
	}
	_ = c.Close()
}

func TestPermanentErrorsAreReportedNotRetried(t *testing.T) {
	e := &endpoint{script: []int{400}}
	var reported atomic.Int64
	c := start(t, e, func(c *sdk.Config) { c.OnError = func(error, int) { reported.Add(1) } })
	_ = c.Track(sdk.Track{UserID: "u", Event: "e"})
	c.Flush()
	_ = c.Close()
	if e.calls.Load() != 1 || reported.Load() != 1 {
		t.Fatalf("calls %d, reported %d: a 400 is not retried, and is reported", e.calls.Load(), reported.Load())
	}
}

func TestQueueOverflowNeverBlocks(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c, err := sdk.New(sdk.Config{Endpoint: srv.URL, WriteKey: "wk", QueueSize: 5, BatchSize: 1, CloseTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	full := 0
	begin := time.Now()
	for range 100 {
		if err := c.Track(sdk.Track{UserID: "u", Event: "e"}); errors.Is(err, sdk.ErrQueueFull) {
			full++
		}
	}
	if time.Since(begin) > time.Second || full < 90 {
		t.Fatalf("%d of 100 refused in %s: overflow must refuse at once", full, time.Since(begin))
	}
	if err := c.Close(); err == nil {
		t.Fatal("Close reports the events it could not send in time")
	}
}

func TestValidation(t *testing.T) {
	c := start(t, &endpoint{}, nil)
	defer func() { _ = c.Close() }()
	if err := c.Track(sdk.Track{Event: "e"}); !errors.Is(err, sdk.ErrNoIdentity) {
		t.Fatal(err)
	}
	big := map[string]any{"s": string(make([]byte, 40<<10))}
	if err := c.Track(sdk.Track{UserID: "u", Event: "e", Properties: big}); !errors.Is(err, sdk.ErrEventTooLarge) {
		t.Fatal(err)
	}
	if _, err := sdk.New(sdk.Config{}); err == nil {
		t.Fatal("Endpoint and WriteKey are required")
	}
}
