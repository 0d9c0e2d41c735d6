// Package sdk sends usage events to Stickpoint (or any Segment-compatible
// endpoint) from Go services. It depends on the standard library only.
//
// Calls are queued and sent in the background in gzipped batches. A call
// never blocks on the network: when the queue is full, it returns
// ErrQueueFull at once and the event is not queued. Close sends what is
// queued and waits for it, up to Config.CloseTimeout.
//
//	client, err := sdk.New(sdk.Config{Endpoint: "http://127.0.0.1:8080", WriteKey: "wk_..."})
//	if err != nil { ... }
//	defer client.Close()
//	client.Track(sdk.Track{UserID: "u1", Event: "Report Built", Properties: map[string]any{"rows": 42}})
package sdk

import (
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits the server enforces; the client checks them before sending.
const (
	MaxEventBytes   = 32 << 10
	MaxRequestBytes = 500 << 10
	MaxBatchEvents  = 2500
)

// Errors a call can return.
var (
	ErrQueueFull     = errors.New("stickpoint: queue full, event dropped")
	ErrClosed        = errors.New("stickpoint: client closed")
	ErrEventTooLarge = errors.New("stickpoint: event over 32 KB")
	ErrNoIdentity    = errors.New("stickpoint: a userId or an anonymousId is required")
)

// Config configures a Client. Endpoint and WriteKey are required.
type Config struct {
	Endpoint string // e.g. http://127.0.0.1:8080
	WriteKey string
	// BatchSize sends a batch once it holds this many events (default 250).
	BatchSize int
	// FlushInterval sends a partial batch after this long (default 1s).
	FlushInterval time.Duration
	// QueueSize bounds the events waiting to be sent (default 10,000).
	QueueSize int
	// MaxRetries bounds the retries of one batch (default 8); with the
	// backoff that is about two minutes.
	MaxRetries int
	// RetryBase and RetryMax bound the exponential backoff (defaults 200ms, 30s).
	RetryBase, RetryMax time.Duration
	// CloseTimeout bounds Close (default 30s).
	CloseTimeout time.Duration
	// DisableGzip sends plain JSON.
	DisableGzip bool
	// HTTPClient defaults to a client with a 10s timeout.
	HTTPClient *http.Client
	// OnError is told about batches that could not be delivered.
	OnError func(err error, events int)
	// OnReject is told about each call the server refused on its own (a
	// bad timestamp, a missing userId) while it stored the rest of its
	// batch. Such a call is not retried: resending can't fix it.
	OnReject func(Rejection)
}

// Rejection is a call the server refused, and why.
type Rejection struct {
	// Call is the call as it was queued.
	Call json.RawMessage
	// Field is the field at fault, as the server names it in the batch
	// (batch[3].timestamp); Code is invalid_request or limit_exceeded.
	Field, Code, Message string
}

func (c *Config) defaults() error {
	if c.Endpoint == "" || c.WriteKey == "" {
		return errors.New("stickpoint: Endpoint and WriteKey are required")
	}
	c.Endpoint = strings.TrimRight(c.Endpoint, "/")
	if c.BatchSize <= 0 || c.BatchSize > MaxBatchEvents {
		c.BatchSize = 250
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 10000
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = 8
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 200 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	return nil
}

// Track records an action a user took.
type Track struct {
	MessageID   string
	UserID      string
	AnonymousID string
	Event       string
	Properties  map[string]any
	Context     map[string]any
	Timestamp   time.Time
}

// Identify records who a user is.
type Identify struct {
	MessageID   string
	UserID      string
	AnonymousID string
	Traits      map[string]any
	Context     map[string]any
	Timestamp   time.Time
}

// Group ties a user to an account, and records the account's traits.
type Group struct {
	MessageID   string
	UserID      string
	AnonymousID string
	GroupID     string
	Traits      map[string]any
	Context     map[string]any
	Timestamp   time.Time
}

// Page records a page view.
type Page struct {
	MessageID   string
	UserID      string
	AnonymousID string
	Name        string
	Properties  map[string]any
	Context     map[string]any
	Timestamp   time.Time
}

// message is the wire form of one call.
type message struct {
	Type        string         `json:"type"`
	MessageID   string         `json:"messageId"`
	UserID      string         `json:"userId,omitempty"`
	AnonymousID string         `json:"anonymousId,omitempty"`
	Event       string         `json:"event,omitempty"`
	Name        string         `json:"name,omitempty"`
	GroupID     string         `json:"groupId,omitempty"`
	Properties  map[string]any `json:"properties,omitempty"`
	Traits      map[string]any `json:"traits,omitempty"`
	Context     map[string]any `json:"context,omitempty"`
	Timestamp   string         `json:"timestamp"`
}

// Client sends events. It is safe for concurrent use.
type Client struct {
	cfg    Config
	queue  chan json.RawMessage
	flush  chan chan struct{}
	done   chan struct{}
	mu     sync.RWMutex
	closed bool
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

// New starts a client.
func New(cfg Config) (*Client, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, queue: make(chan json.RawMessage, cfg.QueueSize), flush: make(chan chan struct{}),
		done: make(chan struct{}), ctx: ctx, cancel: cancel}
	go c.loop()
	return c, nil
}

// Track queues a track call.
func (c *Client) Track(t Track) error {
	if t.Event == "" {
		return errors.New("stickpoint: Track needs an Event name")
	}
	return c.enqueue(message{Type: "track", MessageID: t.MessageID, UserID: t.UserID, AnonymousID: t.AnonymousID,
		Event: t.Event, Properties: t.Properties, Context: t.Context}, t.Timestamp)
}

// Identify queues an identify call.
func (c *Client) Identify(i Identify) error {
	return c.enqueue(message{Type: "identify", MessageID: i.MessageID, UserID: i.UserID, AnonymousID: i.AnonymousID,
		Traits: i.Traits, Context: i.Context}, i.Timestamp)
}

// Group queues a group call.
func (c *Client) Group(g Group) error {
	if g.GroupID == "" {
		return errors.New("stickpoint: Group needs a GroupID")
	}
	return c.enqueue(message{Type: "group", MessageID: g.MessageID, UserID: g.UserID, AnonymousID: g.AnonymousID,
		GroupID: g.GroupID, Traits: g.Traits, Context: g.Context}, g.Timestamp)
}

// Page queues a page call.
func (c *Client) Page(p Page) error {
	return c.enqueue(message{Type: "page", MessageID: p.MessageID, UserID: p.UserID, AnonymousID: p.AnonymousID,
		Name: p.Name, Properties: p.Properties, Context: p.Context}, p.Timestamp)
}

// Raw queues a Segment call given as a JSON object, as is: it must have a
// "type". Without a "messageId" the server derives one from the call's
// bytes, so sending the same call twice still stores it once.
func (c *Client) Raw(call json.RawMessage) error {
	var probe struct {
		Type        string          `json:"type"`
		UserID      json.RawMessage `json:"userId"`
		AnonymousID json.RawMessage `json:"anonymousId"`
	}
	if err := json.Unmarshal(call, &probe); err != nil {
		return fmt.Errorf("stickpoint: not a JSON object: %w", err)
	}
	if probe.Type == "" {
		return errors.New("stickpoint: the call has no \"type\"")
	}
	if len(probe.UserID) == 0 && len(probe.AnonymousID) == 0 {
		return ErrNoIdentity
	}
	if len(call) > MaxEventBytes {
		return ErrEventTooLarge
	}
	return c.push(append(json.RawMessage(nil), call...))
}

func (c *Client) enqueue(m message, ts time.Time) error {
	if m.UserID == "" && m.AnonymousID == "" {
		return ErrNoIdentity
	}
	if m.MessageID == "" {
		m.MessageID = newMessageID()
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	m.Timestamp = ts.UTC().Format(time.RFC3339Nano)
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("stickpoint: encode %s: %w", m.Type, err)
	}
	if len(b) > MaxEventBytes {
		return ErrEventTooLarge
	}
	return c.push(b)
}

func (c *Client) push(b json.RawMessage) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	select {
	case c.queue <- b:
		return nil
	default:
		return ErrQueueFull
	}
}

// Flush sends what is queued now and waits until it was sent (or given up).
func (c *Client) Flush() {
	ack := make(chan struct{})
	select {
	case c.flush <- ack:
		<-ack
	case <-c.done:
	}
}

// Close stops accepting calls, sends what is queued and waits, up to
// CloseTimeout; events still unsent then are reported to OnError.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.queue)
		c.mu.Unlock()
	})
	select {
	case <-c.done:
		return nil
	case <-time.After(c.cfg.CloseTimeout):
		c.cancel() // abandon retries
		<-c.done
		return fmt.Errorf("stickpoint: close timed out after %s", c.cfg.CloseTimeout)
	}
}

func (c *Client) loop() {
	defer close(c.done)
	defer c.cancel()
	var batch []json.RawMessage
	size := 0
	ticker := time.NewTicker(c.cfg.FlushInterval)
	defer ticker.Stop()
	send := func() {
		if len(batch) > 0 {
			c.send(batch)
			batch, size = nil, 0
		}
	}
	// add puts m in the batch, sending first if m would take the request
	// over the size limit, and after if the batch is full.
	add := func(m json.RawMessage) {
		if size+len(m)+64 > MaxRequestBytes-1024 {
			send()
		}
		batch = append(batch, m)
		size += len(m) + 1
		if len(batch) >= c.cfg.BatchSize {
			send()
		}
	}
	for {
		select {
		case m, ok := <-c.queue:
			if !ok {
				send()
				return
			}
			add(m)
		case <-ticker.C:
			send()
		case ack := <-c.flush:
			for more := true; more; { // take what is queued right now
				select {
				case m, ok := <-c.queue:
					if ok {
						add(m)
					} else {
						more = false
					}
				default:
					more = false
				}
			}
			send()
			close(ack)
		}
	}
}

// send delivers one batch, retrying transient failures with exponential
// backoff and full jitter, and honouring Retry-After.
func (c *Client) send(batch []json.RawMessage) {
	body, err := c.encode(batch)
	if err != nil {
		c.report(err, len(batch))
		return
	}
	var lastErr error
	for attempt := 0; attempt <= c.cfg.MaxRetries; attempt++ {
		retryAfter, rejected, err := c.post(body)
		c.reject(batch, rejected)
		if err == nil {
			return
		}
		lastErr = err
		var perm permanentError
		if errors.As(err, &perm) {
			if len(rejected) == len(batch) {
				return // every call was refused on its own, and reported so
			}
			break
		}
		wait := c.backoff(attempt)
		if retryAfter > wait {
			wait = retryAfter
		}
		select {
		case <-time.After(wait):
		case <-c.ctx.Done():
			c.report(fmt.Errorf("stickpoint: gave up at close: %w", lastErr), len(batch))
			return
		}
	}
	c.report(lastErr, len(batch))
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.RetryBase << min(attempt, 20)
	if d <= 0 || d > c.cfg.RetryMax {
		d = c.cfg.RetryMax
	}
	return time.Duration(rand.Int64N(int64(d)) + 1) // full jitter
}

type permanentError struct{ error }

func (c *Client) encode(batch []json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if !c.cfg.DisableGzip {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	if _, err := io.WriteString(w, `{"sentAt":"`+time.Now().UTC().Format(time.RFC3339Nano)+`","batch":[`); err != nil {
		return nil, err
	}
	for i, m := range batch {
		if i > 0 {
			_, _ = w.Write([]byte{','})
		}
		_, _ = w.Write(m)
	}
	_, _ = io.WriteString(w, "]}")
	if zw != nil {
		if err := zw.Close(); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// rejectedCall is a call the server lists as refused.
type rejectedCall struct {
	Index   int    `json:"index"`
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (c *Client) reject(batch []json.RawMessage, rejected []rejectedCall) {
	if c.cfg.OnReject == nil {
		return
	}
	for _, r := range rejected {
		if r.Index >= 0 && r.Index < len(batch) {
			c.cfg.OnReject(Rejection{Call: batch[r.Index], Field: r.Field, Code: r.Code, Message: r.Message})
		}
	}
}

// maxResponseBytes bounds the response read: enough for a refusal of every
// call of a full batch.
const maxResponseBytes = 1 << 20

// post sends the body once. A nil error means delivered; rejected lists
// the calls the server refused one by one.
func (c *Client) post(body []byte) (time.Duration, []rejectedCall, error) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.cfg.Endpoint+"/v1/batch", bytes.NewReader(body))
	if err != nil {
		return 0, nil, permanentError{err}
	}
	req.SetBasicAuth(c.cfg.WriteKey, "")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "stickpoint-go-sdk")
	if !c.cfg.DisableGzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, err // network: retry
	}
	defer func() { _ = resp.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	var parsed struct {
		Rejected []rejectedCall `json:"rejected"`
	}
	_ = json.Unmarshal(msg, &parsed) // other servers may answer anything
	switch {
	case resp.StatusCode < 300:
		return 0, parsed.Rejected, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return wait, nil, fmt.Errorf("stickpoint: %s: %s", resp.Status, firstBytes(msg))
	default: // 400, 401, 413: retrying can't help
		return 0, parsed.Rejected, permanentError{fmt.Errorf("stickpoint: %s: %s", resp.Status, firstBytes(msg))}
	}
}

// firstBytes is the start of a response body, for an error message.
func firstBytes(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > 4096 {
		return b[:4096]
	}
	return b
}

func (c *Client) report(err error, n int) {
	if c.cfg.OnError != nil && err != nil {
		c.cfg.OnError(err, n)
	}
}

func newMessageID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
