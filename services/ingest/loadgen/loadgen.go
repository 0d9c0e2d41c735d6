// Package loadgen posts Segment /v1/batch requests at an ingest endpoint and
// measures what it takes: accepted events/s, acknowledgement latency, and,
// given a way to count stored events, rows/s reaching ClickHouse end to end.
// `stickpoint load` and the ingest benchmark use it.
package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a run.
type Options struct {
	URL         string // base URL, e.g. http://127.0.0.1:8080
	WriteKey    string
	Concurrency int           // requests in flight
	Batch       int           // events per request
	Duration    time.Duration // how long to send
	// Rate caps events per second across all workers; 0 sends as fast as
	// acknowledgements allow.
	Rate float64
	// RunID prefixes messageIds, so runs never dedup against each other.
	RunID string
	// Stored, if set, counts this run's events in ClickHouse; Run then
	// waits (up to DrainTimeout) until all accepted events are stored.
	Stored       func(ctx context.Context) (uint64, error)
	DrainTimeout time.Duration
	// Progress, if set, is called about once a second with events accepted so far.
	Progress func(accepted uint64)
}

// Result is what a run measured.
type Result struct {
	Requests      uint64
	Accepted      uint64         // events acknowledged with 200
	Rejected      map[int]uint64 // requests by non-200 status (0: transport error)
	Elapsed       time.Duration  // sending time
	EventsPerSec  float64
	P50, P99, Max time.Duration // acknowledgement latency per request
	StoredEvents  uint64
	EndToEnd      time.Duration // from start until every accepted event was stored
	StoredPerSec  float64
}

func (r Result) String() string {
	s := fmt.Sprintf("accepted %d events in %d requests over %s: %.0f events/s; ack latency p50 %s p99 %s max %s",
		r.Accepted, r.Requests, r.Elapsed.Round(time.Millisecond), r.EventsPerSec,
		r.P50.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond), r.Max.Round(100*time.Microsecond))
	if r.EndToEnd > 0 {
		s += fmt.Sprintf("; stored %d in %s end to end: %.0f rows/s", r.StoredEvents, r.EndToEnd.Round(time.Millisecond), r.StoredPerSec)
	}
	if len(r.Rejected) > 0 {
		s += fmt.Sprintf("; rejected requests by status %v", r.Rejected)
	}
	return s
}

// Run sends load until opts.Duration passes or ctx ends.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Concurrency < 1 || opts.Batch < 1 || opts.Duration <= 0 {
		return Result{}, fmt.Errorf("loadgen: concurrency, batch and duration must be positive")
	}
	if opts.RunID == "" {
		opts.RunID = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	// Checked before any worker starts, so a bad URL is one clear error;
	// each worker dials its own copy.
	template, err := newConn(opts.URL, opts.WriteKey)
	if err != nil {
		return Result{}, err
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 2 * time.Minute
	}
	var (
		accepted, requests atomic.Uint64
		mu                 sync.Mutex
		latencies          []time.Duration
		rejected           = map[int]uint64{}
	)
	var pace <-chan time.Time
	if opts.Rate > 0 {
		interval := time.Duration(float64(time.Second) * float64(opts.Batch) / opts.Rate)
		t := time.NewTicker(interval)
		defer t.Stop()
		pace = t.C
	}
	start := time.Now()
	sendCtx, cancel := context.WithTimeout(ctx, opts.Duration)
	defer cancel()
	stopProgress := make(chan struct{})
	if opts.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					opts.Progress(accepted.Load())
				case <-stopProgress:
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for w := range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body bytes.Buffer
			conn := *template
			defer conn.close()
			own := make([]time.Duration, 0, 1024)
			for seq := 0; ; seq++ {
				if pace != nil {
					select {
					case <-pace:
					case <-sendCtx.Done():
					}
				}
				if sendCtx.Err() != nil {
					break
				}
				buildBatch(&body, opts.RunID, w, seq, opts.Batch)
				// In-flight requests finish after the deadline, so every
				// event the server took is counted as accepted.
				t0 := time.Now()
				status, err := conn.post(ctx, body.Bytes())
				if ctx.Err() != nil && err != nil {
					break // the caller gave up, not a failure
				}
				requests.Add(1)
				if status == http.StatusOK {
					own = append(own, time.Since(t0))
					accepted.Add(uint64(opts.Batch))
					continue
				}
				mu.Lock()
				rejected[status]++
				mu.Unlock()
			}
			mu.Lock()
			latencies = append(latencies, own...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(stopProgress)
	res := Result{Requests: requests.Load(), Accepted: accepted.Load(), Rejected: rejected, Elapsed: time.Since(start)}
	res.EventsPerSec = float64(res.Accepted) / res.Elapsed.Seconds()
	slices.Sort(latencies)
	if n := len(latencies); n > 0 {
		res.P50, res.P99, res.Max = latencies[n/2], latencies[min(n-1, n*99/100)], latencies[n-1]
	}
	if opts.Stored != nil && res.Accepted > 0 {
		deadline := time.Now().Add(opts.DrainTimeout)
		for {
			t0 := time.Now()
			n, err := opts.Stored(ctx)
			if err != nil {
				return res, fmt.Errorf("count stored events: %w", err)
			}
			res.StoredEvents = n
			if n >= res.Accepted || time.Now().After(deadline) {
				break
			}
			// An exact count scans every messageId, so polling it flat out
			// would take CPU from the writer being measured: wait at
			// least four times as long as the count took.
			time.Sleep(max(50*time.Millisecond, 4*time.Since(t0)))
		}
		res.EndToEnd = time.Since(start)
		res.StoredPerSec = float64(res.StoredEvents) / res.EndToEnd.Seconds()
		if res.StoredEvents < res.Accepted {
			return res, fmt.Errorf("only %d of %d accepted events stored within %s", res.StoredEvents, res.Accepted, opts.DrainTimeout)
		}
	}
	return res, nil
}

// buildBatch writes a batch of track events with unique messageIds, shaped
// like a product's usage events (about 300 bytes each).
func buildBatch(b *bytes.Buffer, run string, worker, seq, n int) {
	b.Reset()
	b.WriteString(`{"batch":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		id := run + "-" + strconv.Itoa(worker) + "-" + strconv.Itoa(seq) + "-" + strconv.Itoa(i)
		user := strconv.Itoa((seq*n + i) % 5000)
		b.WriteString(`{"type":"track","event":"Report Built","messageId":"`)
		b.WriteString(id)
		b.WriteString(`","userId":"u`)
		b.WriteString(user)
		b.WriteString(`","context":{"groupId":"acct-`)
		b.WriteString(strconv.Itoa((seq*n + i) % 500))
		b.WriteString(`","library":{"name":"loadgen"}},"properties":{"rows":`)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`,"format":"csv","dashboard_id":"d-`)
		b.WriteString(strconv.Itoa(i % 37))
		b.WriteString(`"}}`)
	}
	b.WriteString(`]}`)
}
