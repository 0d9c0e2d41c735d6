// Package receiver receives Stickpoint's alert notifications: Verify checks
// a webhook's signature, and Webhook and Slack are loopback receivers that
// record what they get (the demo's receiver, and the tests' real ends of
// each channel).
package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tolerance is how old a signature's timestamp may be: older is a replay.
const Tolerance = 5 * time.Minute

// Verify checks a Stickpoint-Signature header (t=<unix seconds>,v1=<hex
// HMAC-SHA256 of "<t>.<body>">) against the body and the channel's secret.
func Verify(secret, header string, body []byte, now time.Time) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return errors.New("malformed Stickpoint-Signature")
	}
	if age := now.Sub(time.Unix(t, 0)); age > Tolerance || age < -Tolerance {
		return fmt.Errorf("signature timestamp is %s away: a replay?", age.Round(time.Second))
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("signature does not match")
}

// Received is one request a receiver accepted.
type Received struct {
	At         time.Time
	DeliveryID string
	Body       []byte
}

// Webhook is a webhook receiver on loopback: it verifies each request's
// signature (401 when it fails), answers duplicates of a delivery id with
// 200 without recording them again, and records the rest.
type Webhook struct {
	Secret string
	// Fail, when set, answers a request with its status (and Retry-After
	// header, when retryAfter is set) instead of taking it: a receiver
	// that is down or overloaded.
	Fail func(r *http.Request) (status int, retryAfter string)
	// OnReceive, when set, sees each delivery as it is taken.
	OnReceive func(Received)

	mu         sync.Mutex
	got        []Received
	duplicates int
	rejected   int
}

// ServeHTTP takes one notification.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	if err := Verify(w.Secret, r.Header.Get("Stickpoint-Signature"), body, time.Now()); err != nil {
		w.mu.Lock()
		w.rejected++
		w.mu.Unlock()
		http.Error(rw, err.Error(), http.StatusUnauthorized)
		return
	}
	if w.Fail != nil {
		if status, retryAfter := w.Fail(r); status != 0 {
			if retryAfter != "" {
				rw.Header().Set("Retry-After", retryAfter)
			}
			http.Error(rw, "unavailable", status)
			return
		}
	}
	rec := Received{At: time.Now(), DeliveryID: r.Header.Get("Stickpoint-Delivery-Id"), Body: body}
	w.mu.Lock()
	for _, g := range w.got {
		if g.DeliveryID == rec.DeliveryID {
			w.duplicates++
			w.mu.Unlock()
			rw.WriteHeader(http.StatusOK) // seen: acknowledge, don't act twice
			return
		}
	}
	w.got = append(w.got, rec)
	w.mu.Unlock()
	if w.OnReceive != nil {
		w.OnReceive(rec)
	}
	rw.WriteHeader(http.StatusNoContent)
}

// Got returns the deliveries taken, in order.
func (w *Webhook) Got() []Received {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Received(nil), w.got...)
}

// Counts returns how many duplicates and bad signatures came.
func (w *Webhook) Counts() (duplicates, rejected int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.duplicates, w.rejected
}

// Listen serves h on addr ("127.0.0.1:0" for any port) until Close, and
// returns the address it listens on.
func Listen(addr string, h http.Handler) (*http.Server, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return srv, l.Addr().String(), nil
}

// Slack is a Slack-shaped incoming-webhook receiver: it takes JSON with a
// text and Block Kit blocks, as Slack does, answering "ok".
type Slack struct {
	mu  sync.Mutex
	got []map[string]any
}

// ServeHTTP takes one message.
func (s *Slack) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var msg map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&msg); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(rw, "invalid_payload", http.StatusBadRequest)
		return
	}
	if _, ok := msg["text"].(string); !ok {
		http.Error(rw, "no_text", http.StatusBadRequest)
		return
	}
	if blocks, ok := msg["blocks"].([]any); !ok || len(blocks) == 0 || len(blocks) > 50 {
		http.Error(rw, "invalid_blocks", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.got = append(s.got, msg)
	s.mu.Unlock()
	_, _ = rw.Write([]byte("ok"))
}

// Got returns the messages taken.
func (s *Slack) Got() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.got...)
}
