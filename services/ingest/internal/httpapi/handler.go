// Package httpapi is ingest's Segment-compatible HTTP API: existing Segment
// and RudderStack SDKs send to it unchanged.
package httpapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/services/ingest/internal/intake"
	"github.com/stickpoint/stickpoint/services/ingest/internal/segment"
)

const scope = "github.com/stickpoint/stickpoint/services/ingest/internal/httpapi"

// Config configures the HTTP API.
type Config struct {
	Limits segment.Limits `json:"limits"`
	// MaxRequestBytes bounds a request body, after gzip decompression too.
	MaxRequestBytes int `json:"max_request_bytes"`
	// RatePerSecond and RateBurst are each tenant's event budget; a
	// request over it gets 429 with Retry-After. Zero disables the limit.
	RatePerSecond float64 `json:"rate_per_second"`
	RateBurst     int     `json:"rate_burst"`
	// PublishTimeout bounds the wait for JetStream's acknowledgement.
	PublishTimeout time.Duration `json:"publish_timeout"`
	// CoalesceWait is how long a small request (under 500 events) waits for
	// concurrent ones of its tenant, to share one JetStream write and its
	// fsync (group commit); 0 publishes each request on its own.
	CoalesceWait time.Duration `json:"coalesce_wait"`
	// CoalesceInflight is how many coalesced writes of a tenant may be in
	// flight at once. 0 picks by the durability: 1 when the embedded NATS
	// fsyncs every write (nats.sync_always), else 2. Set 1 when an
	// external NATS server fsyncs every write.
	CoalesceInflight int `json:"coalesce_inflight"`
	// MaxInflightBytes bounds the request bytes (after decompression)
	// being read, decoded and published at once, HTTP and gRPC together. A
	// request waits up to AdmitWait for room, then gets 503 with
	// Retry-After; its body is not read while it waits.
	MaxInflightBytes int64         `json:"max_inflight_bytes"`
	AdmitWait        time.Duration `json:"admit_wait"`
	// TenantInflightShare is the share of MaxInflightBytes one tenant's
	// requests may hold (those whose key is in the Authorization header,
	// or come over gRPC): a tenant's surge waits for its own share and
	// leaves room for the others. 1 turns it off.
	TenantInflightShare float64 `json:"tenant_inflight_share"`
	// CORSOrigins may call the API from browsers; "*" allows any.
	CORSOrigins []string `json:"cors_origins"`
}

// DefaultConfig uses Segment's limits: 32 KB per event, 500 KB per
// request, 2,500 events per batch. A tenant's rate defaults to 250,000
// events/s, above what one process stores end to end (about 100,000/s on
// two cores), so a single-tenant deployment is never capped below its
// capacity; what keeps one tenant's surge from starving the others is its
// share of the in-flight budget (half), not the rate.
func DefaultConfig() Config {
	return Config{Limits: segment.DefaultLimits(), MaxRequestBytes: 500 << 10, RatePerSecond: 250000, RateBurst: 500000,
		PublishTimeout: 5 * time.Second, CoalesceWait: time.Millisecond, MaxInflightBytes: 64 << 20, TenantInflightShare: 0.5, AdmitWait: 2 * time.Second, CORSOrigins: []string{"*"}}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if c.MaxRequestBytes < c.Limits.MaxEventBytes {
		return fmt.Errorf("max_request_bytes: %d is below limits.max_event_bytes", c.MaxRequestBytes)
	}
	if c.RatePerSecond > 0 && c.RateBurst < 1 {
		return fmt.Errorf("rate_burst: must be at least 1 when rate_per_second is set")
	}
	if c.PublishTimeout <= 0 {
		return fmt.Errorf("publish_timeout: must be positive")
	}
	if c.MaxInflightBytes < int64(c.MaxRequestBytes) {
		return fmt.Errorf("max_inflight_bytes: %d is below max_request_bytes (%d)", c.MaxInflightBytes, c.MaxRequestBytes)
	}
	if c.AdmitWait < 0 {
		return fmt.Errorf("admit_wait: must not be negative")
	}
	if c.TenantInflightShare <= 0 || c.TenantInflightShare > 1 {
		return fmt.Errorf("tenant_inflight_share: %v is not in (0, 1]", c.TenantInflightShare)
	}
	if c.CoalesceWait < 0 || c.CoalesceWait > 100*time.Millisecond {
		return fmt.Errorf("coalesce_wait: %v is not between 0 and 100ms", c.CoalesceWait)
	}
	if c.CoalesceInflight < 0 || c.CoalesceInflight > 8 {
		return fmt.Errorf("coalesce_inflight: %d is not between 0 (by the durability) and 8", c.CoalesceInflight)
	}
	return nil
}

// WriteKeys resolves write keys (tenancy.Registry).
type WriteKeys interface {
	ResolveWriteKey(key string) (tenancy.WriteKey, error)
}

// Handler serves /v1/*.
type Handler struct {
	cfg    Config
	keys   WriteKeys
	intake *intake.Intake
	log    *slog.Logger
	tracer trace.Tracer
	now    func() time.Time
}

// New builds the handler over an intake shared with gRPC ingest.
func New(cfg Config, keys WriteKeys, in *intake.Intake, log *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Handler{cfg: cfg, keys: keys, intake: in, log: log, now: time.Now,
		tracer: otel.GetTracerProvider().Tracer(scope)}, nil
}

// Kinds are the /v1/<kind> endpoints.
var Kinds = []string{"track", "identify", "group", "page", "screen", "alias", "batch", "import"}

// Register adds the endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	for _, k := range Kinds {
		mux.Handle("/v1/"+k, h)
	}
}

type apiError struct {
	Status     int
	Code       string
	Field      string
	Message    string
	RetryAfter time.Duration
	// Rejected lists the calls of a batch none of whose calls was valid.
	Rejected []rejectedCall
}

// rejectedCall is a refused call of a batch, as the response lists it.
type rejectedCall struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func listRejected(rs []segment.Rejected) []rejectedCall {
	out := make([]rejectedCall, len(rs))
	for i, r := range rs {
		out[i] = rejectedCall{Index: r.Index, Field: r.Err.Field, Code: r.Err.Code, Message: r.Err.Msg}
	}
	return out
}

// callRejections are rs for the tenant's ingest warnings.
func callRejections(rs []segment.Rejected) []intake.CallRejection {
	out := make([]intake.CallRejection, len(rs))
	for i, r := range rs {
		out[i] = intake.CallRejection{Code: r.Err.Code, Field: r.Err.Field, Message: r.Err.Msg, Call: r.Call}
	}
	return out
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.cors(w, r)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	kind := strings.TrimPrefix(r.URL.Path, "/v1/")
	if kind == "import" {
		kind = "batch"
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		h.fail(r.Context(), w, "", &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "use POST"})
		return
	}
	ctx, span := h.tracer.Start(r.Context(), "ingest "+kind)
	defer span.End()
	tenant, rejected, apiErr := h.handle(ctx, r, kind)
	if apiErr != nil {
		h.fail(ctx, w, tenant, apiErr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if len(rejected) == 0 {
		_, _ = io.WriteString(w, `{"success":true}`)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "rejected": listRejected(rejected)})
}

// handle takes one request. For a batch, it returns the calls it refused
// one by one while it stored the others.
func (h *Handler) handle(ctx context.Context, r *http.Request, kind string) (tenant string, rejected []segment.Rejected, _ *apiError) {
	received := h.now()
	// Authenticate before validating, so a bad key is always a 401 and
	// every rejection is counted for the right tenant: from the header
	// before the body is read, else from the body's writeKey.
	var key tenancy.WriteKey
	var apiErr *apiError
	user, _, hasHeader := basicAuth(r)
	if hasHeader {
		if key, apiErr = h.resolve(user); apiErr != nil {
			return "", nil, apiErr
		}
	}
	if r.ContentLength > int64(h.cfg.MaxRequestBytes) {
		return key.TenantID, nil, h.tooLarge()
	}
	if hasHeader {
		// A tenant already over its rate is refused before its body is
		// read: a flood then costs little more than its headers.
		var rl *intake.RateLimitedError
		if err := h.intake.CheckRate(key.TenantID); errors.As(err, &rl) {
			return key.TenantID, nil, &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: rl.RetryAfter, Message: rl.Error()}
		}
	}
	res, err := h.intake.Admit(ctx, key.TenantID, h.admitSize(r))
	if err != nil {
		code := "overloaded"
		if !errors.Is(err, intake.ErrOverloaded) {
			code = "canceled" // the client left while waiting
		}
		return key.TenantID, nil, &apiError{Status: http.StatusServiceUnavailable, Code: code, RetryAfter: intake.OverloadRetryAfter, Message: err.Error()}
	}
	defer res.Release()
	body, release, apiErr := h.readBody(r)
	if apiErr != nil {
		return key.TenantID, nil, apiErr
	}
	defer release() // once the events, which alias the body, are published
	res.Shrink(int64(len(body)))
	req, err := segment.Decode(kind, body, received, h.cfg.Limits)
	if !hasHeader {
		var bodyKey string
		if err == nil {
			bodyKey = req.WriteKey
		} else {
			bodyKey = probeWriteKey(body) // the body was refused; is its key good?
		}
		if key, apiErr = h.resolve(bodyKey); apiErr != nil {
			return "", nil, apiErr
		}
	}
	var se *segment.Error
	if errors.As(err, &se) {
		return key.TenantID, nil, &apiError{Status: se.Status, Code: se.Code, Field: se.Field, Message: se.Msg}
	} else if err != nil {
		return key.TenantID, nil, &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: err.Error()}
	}
	tenant = key.TenantID
	if len(req.Events) == 0 {
		// Every call of the batch was refused: nothing to store, and a
		// 400 tells the SDK not to retry.
		h.intake.RejectCalls(ctx, "http", tenant, callRejections(req.Rejected))
		first := req.Rejected[0].Err
		return tenant, nil, &apiError{Status: http.StatusBadRequest, Code: first.Code, Field: first.Field,
			Message: fmt.Sprintf("none of the %d calls is valid; the first: %s", len(req.Rejected), first.Msg), Rejected: listRejected(req.Rejected)}
	}
	err = h.intake.Accept(ctx, "http", tenant, key.SourceID, req.Events, received)
	var rl *intake.RateLimitedError
	switch {
	case errors.As(err, &rl):
		return tenant, nil, &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: rl.RetryAfter, Message: rl.Error()}
	case err != nil:
		return tenant, nil, &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", RetryAfter: intake.RetryAfter, Message: err.Error()}
	}
	// Counted once the rest is stored: a request refused as a whole is
	// retried, and its bad calls would count twice.
	h.intake.RejectCalls(ctx, "http", tenant, callRejections(req.Rejected))
	return tenant, req.Rejected, nil
}

func (h *Handler) tooLarge() *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "request_too_large",
		Message: fmt.Sprintf("the request body is over the limit of %d bytes", h.cfg.MaxRequestBytes)}
}

// admitSize is the share of the in-flight budget a request reserves before
// its body is read: its Content-Length, or the most a gzip or chunked body
// may come to (shrunk once the body is read).
func (h *Handler) admitSize(r *http.Request) int64 {
	if enc := contentEncoding(r); (enc == "" || enc == "identity") && r.ContentLength >= 0 {
		return r.ContentLength
	}
	return int64(h.cfg.MaxRequestBytes)
}

func contentEncoding(r *http.Request) string {
	return strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
}

// readBody reads at most MaxRequestBytes, decompressing gzip with the same
// bound, so neither a large body nor a gzip bomb can take memory. The body
// is read into a pooled buffer (bodies are most of a request's
// allocations); the decoded events alias it, so release it only once
// nothing uses them.
func (h *Handler) readBody(r *http.Request) (body []byte, release func(), _ *apiError) {
	limit := int64(h.cfg.MaxRequestBytes)
	var src io.Reader = http.MaxBytesReader(nil, r.Body, limit+1)
	switch enc := contentEncoding(r); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(src)
		if err != nil {
			return nil, nil, &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: "the body is not valid gzip: " + err.Error()}
		}
		defer func() { _ = zr.Close() }()
		src = zr
	default:
		return nil, nil, &apiError{Status: http.StatusUnsupportedMediaType, Code: "unsupported_encoding", Message: "Content-Encoding " + enc + " is not supported; use gzip or none"}
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	release = func() {
		if buf.Cap() <= int(limit)+bytes.MinRead {
			buf.Reset()
			bodyPool.Put(buf)
		}
	}
	if r.ContentLength > 0 && contentEncoding(r) == "" {
		buf.Grow(int(min(r.ContentLength, limit)) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(src, limit+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || int64(buf.Len()) > limit {
		release()
		return nil, nil, h.tooLarge()
	}
	if err != nil {
		release()
		return nil, nil, &apiError{Status: http.StatusBadRequest, Code: "invalid_request", Message: "the body could not be read: " + err.Error()}
	}
	return buf.Bytes(), release, nil
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// resolve looks up a write key: HTTP Basic user name, or writeKey in the
// body (browser SDKs). The key alone decides the tenant.
func (h *Handler) resolve(key string) (tenancy.WriteKey, *apiError) {
	if key == "" {
		return tenancy.WriteKey{}, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized",
			Message: "no write key: send it as the HTTP Basic user name or as writeKey in the body"}
	}
	k, err := h.keys.ResolveWriteKey(key)
	if err != nil {
		return tenancy.WriteKey{}, &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "unknown or revoked write key"}
	}
	return k, nil
}

// probeWriteKey reads writeKey from a body the decoder refused, if it can.
func probeWriteKey(body []byte) string {
	var b struct {
		WriteKey string `json:"writeKey"`
	}
	_ = json.Unmarshal(body, &b)
	return b.WriteKey
}

// basicAuth is r.BasicAuth, also accepting a header without the ":"
// (some clients base64 the bare key).
func basicAuth(r *http.Request) (string, string, bool) {
	if u, p, ok := r.BasicAuth(); ok {
		return u, p, true
	}
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "Basic ")
	if !ok {
		return "", "", false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil || len(dec) == 0 {
		return "", "", false
	}
	return string(dec), "", true
}

func (h *Handler) fail(ctx context.Context, w http.ResponseWriter, tenant string, e *apiError) {
	h.intake.Reject(ctx, "http", tenant, e.Code)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, e.RetryAfter.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	resp := map[string]any{"success": false, "error": map[string]string{"code": e.Code, "field": e.Field, "message": e.Message}}
	if len(e.Rejected) > 0 {
		resp["rejected"] = e.Rejected
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func (h *Handler) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	for _, o := range h.cfg.CORSOrigins {
		if o == "*" || o == origin {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Vary", "Origin")
			w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			// No Allow-Credentials: write keys are not cookies, and a
			// reflected origin must never carry credentials.
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Content-Encoding")
			w.Header().Set("Access-Control-Max-Age", "86400")
			return
		}
	}
}
