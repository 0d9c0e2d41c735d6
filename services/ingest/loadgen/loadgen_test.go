package loadgen

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPostSpeaksHTTP checks each request on the wire (path under the URL's
// prefix, Basic auth, JSON body) and each kind of answer: a plain one, a
// chunked one, an error status and one that closes the connection.
func TestPostSpeaksHTTP(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, _, ok := r.BasicAuth()
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/ingest/v1/batch" || !ok || key != "wk" ||
			r.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
			http.Error(w, "bad request "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		switch string(body) {
		case `{"n":"chunked"}`:
			_, _ = w.Write([]byte("part one "))
			w.(http.Flusher).Flush() // no Content-Length: chunked
			_, _ = w.Write([]byte("part two"))
		case `{"n":"limited"}`:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case `{"n":"close"}`:
			w.Header().Set("Connection", "close")
			_, _ = w.Write([]byte(`{}`))
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	c, err := newConn(srv.URL+"/ingest/", "wk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for i, step := range []struct {
		body  string
		want  int
		conns int32 // connections opened so far
	}{
		{`{"n":1}`, 200, 1},
		{`{"n":"chunked"}`, 200, 1},
		{`{"n":"limited"}`, 429, 1},
		{`{"n":"close"}`, 200, 1},
		{`{"n":2}`, 200, 2}, // the server closed the first: dialled again
		{`not json`, 400, 2},
	} {
		got, err := c.post(t.Context(), []byte(step.body))
		if err != nil || got != step.want {
			t.Fatalf("step %d (%s): status %d, error %v; want %d", i, step.body, got, err, step.want)
		}
		if n := conns.Load(); n != step.conns {
			t.Fatalf("step %d (%s): %d connections opened, want %d", i, step.body, n, step.conns)
		}
	}
}

func TestPostOverTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c, err := newConn(srv.URL, "wk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.tls.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	if got, err := c.post(t.Context(), []byte(`{}`)); err != nil || got != 200 {
		t.Fatalf("status %d, error %v", got, err)
	}
}

func TestBadURLsAreRefused(t *testing.T) {
	for _, u := range []string{"127.0.0.1:8080", "ftp://host", "http://", "://x"} {
		if _, err := Run(t.Context(), Options{URL: u, Concurrency: 1, Batch: 1, Duration: time.Second}); err == nil {
			t.Errorf("%q: no error", u)
		}
	}
}

// TestPostEndsWithItsContext: a request the server never answers returns
// once the caller's context ends, not after the request timeout.
func TestPostEndsWithItsContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer srv.Close()
	defer close(release)
	c, err := newConn(srv.URL, "wk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.post(ctx, []byte(`{}`)); err == nil {
		t.Fatal("no error from a request whose context ended")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("returned after %s", took)
	}
}

// TestRunCountsWhatTheServerTook runs the generator against a server that
// answers 200 or 503 in turn: the accepted events are exactly those of the
// 200s, every messageId is new, and the 503s are reported.
func TestRunCountsWhatTheServerTook(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]bool{}
	var okEvents, n atomic.Uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Batch []struct {
				MessageID string `json:"messageId"`
				Type      string `json:"type"`
			} `json:"batch"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Batch) != 3 {
			http.Error(w, "bad batch", http.StatusBadRequest)
			return
		}
		if n.Add(1)%2 == 0 {
			http.Error(w, "full", http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		for _, e := range body.Batch {
			if ids[e.MessageID] || e.Type != "track" {
				mu.Unlock()
				http.Error(w, "repeated messageId "+e.MessageID, http.StatusConflict)
				return
			}
			ids[e.MessageID] = true
		}
		mu.Unlock()
		okEvents.Add(3)
	}))
	defer srv.Close()
	res, err := Run(t.Context(), Options{URL: srv.URL, WriteKey: "wk", Concurrency: 4, Batch: 3, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted == 0 || res.Accepted != okEvents.Load() {
		t.Fatalf("accepted %d, the server took %d", res.Accepted, okEvents.Load())
	}
	if res.Rejected[http.StatusServiceUnavailable] == 0 || len(res.Rejected) != 1 {
		t.Fatalf("rejected %v, want only 503s", res.Rejected)
	}
	if res.Requests != n.Load() {
		t.Fatalf("%d requests counted, the server answered %d", res.Requests, n.Load())
	}
	if !strings.Contains(res.String(), "503") {
		t.Fatalf("the summary %q does not show the 503s", res)
	}
}
