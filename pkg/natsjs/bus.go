// Package natsjs is Stickpoint's one bus helper: it starts an embedded
// nats-server with JetStream or connects to an external NATS, declares the
// streams, carries trace context in message headers, and runs durable
// consumers that ack only after the work is durable.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config says where the bus is.
type Config struct {
	// URL of an external NATS (distributed mode). Empty starts an embedded
	// nats-server in this process.
	URL string `json:"url"`
	// StoreDir holds the embedded server's JetStream files.
	StoreDir string `json:"store_dir"`
	// ListenAddr, if set, makes the embedded server also accept clients on
	// this host:port (for the nats CLI or other processes). Empty means
	// in-process connections only.
	ListenAddr string `json:"listen_addr"`
	// SyncAlways fsyncs every JetStream write on the embedded server. Off,
	// the server flushes every SyncInterval, so a power loss (not a process
	// crash) can lose acknowledged messages written since the last flush.
	SyncAlways   bool          `json:"sync_always"`
	SyncInterval time.Duration `json:"sync_interval"`
	// Replicas of each stream: 1 embedded, 3 on a cluster.
	Replicas int `json:"replicas"`
	// DuplicateWindow is how long the EVENTS stream remembers Nats-Msg-Id
	// dedup ids.
	DuplicateWindow time.Duration `json:"duplicate_window"`
	// EventPartitions splits the EVENTS stream by tenant: each tenant's
	// events go to one partition, and one writer at a time consumes a
	// partition. Every process must agree on it; change it only with the
	// writers drained (see README).
	EventPartitions int `json:"event_partitions"`
	// EventsMaxBytes bounds the events waiting for the writer. A full
	// stream refuses new events (ingest answers 503) rather than discard
	// any it acknowledged.
	EventsMaxBytes int64 `json:"events_max_bytes"`
	// MemoryStorage keeps every stream and bucket in memory instead of
	// files: for a backtest whose folder is removed when it ends, where
	// writing its signals and notices to disk was about 4% of its time.
	// Nothing survives a restart.
	MemoryStorage bool `json:"memory_storage"`
}

// DefaultConfig is an embedded server under ./.stickpoint/nats.
func DefaultConfig() Config {
	return Config{
		StoreDir:        filepath.Join(".stickpoint", "nats"),
		SyncInterval:    time.Second,
		Replicas:        1,
		DuplicateWindow: 2 * time.Minute,
		EventPartitions: 4,
		EventsMaxBytes:  4 << 30,
	}
}

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	if c.URL == "" && c.StoreDir == "" {
		return errors.New("nats.store_dir: required when nats.url is empty (embedded server)")
	}
	if c.ListenAddr != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return fmt.Errorf("nats.listen_addr: %w", err)
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("nats.replicas: %d is not between 1 and 5", c.Replicas)
	}
	if c.DuplicateWindow < time.Second {
		return fmt.Errorf("nats.duplicate_window: %v is shorter than 1s", c.DuplicateWindow)
	}
	if c.EventPartitions < 1 || c.EventPartitions > 256 {
		return fmt.Errorf("nats.event_partitions: %d is not between 1 and 256", c.EventPartitions)
	}
	if c.EventsMaxBytes < 1<<20 {
		return fmt.Errorf("nats.events_max_bytes: %d is below 1 MiB", c.EventsMaxBytes)
	}
	if c.URL == "" && !c.SyncAlways && c.SyncInterval <= 0 {
		return fmt.Errorf("nats.sync_interval: must be positive unless nats.sync_always is set")
	}
	return nil
}

// Bus is a NATS connection with JetStream, and the embedded server behind it
// when there is one.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	cfg    Config
	server *server.Server
	log    *slog.Logger
	once   sync.Once
}

// FsyncsEveryWrite reports whether this process's embedded server fsyncs
// each JetStream write before acknowledging it (nats.sync_always). It is
// false with an external server, whose settings this process can't see.
func (b *Bus) FsyncsEveryWrite() bool { return b.cfg.URL == "" && b.cfg.SyncAlways }

// Connect starts the embedded server if cfg.URL is empty, then connects.
// name identifies the client in NATS monitoring.
func Connect(ctx context.Context, cfg Config, name string, log *slog.Logger) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, log: log}
	opts := connOptions(name, log)
	url := cfg.URL
	if url == "" {
		s, err := startEmbedded(cfg, log)
		if err != nil {
			return nil, err
		}
		b.server = s
		opts = append(opts, nats.InProcessServer(s))
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(false))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connect to nats %s: %w", displayURL(url), err)
	}
	b.NC = nc
	if b.JS, err = jetstream.New(nc); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	// Fail at start, not on the first publish, when JetStream is off.
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream on %s: %w", displayURL(url), err)
	}
	return b, nil
}

// connOptions are the client options: reconnect forever and log
// connection changes (callbacks run outside any request, so no context).
func connOptions(name string, log *slog.Logger) []nats.Option {
	bg := context.Background()
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.WarnContext(bg, "nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.InfoContext(bg, "nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.ErrorContext(bg, "nats async error", "subject", subj, "error", err)
		}),
	}
}

func displayURL(u string) string {
	if u == "" {
		return "(embedded)"
	}
	return u
}

func startEmbedded(cfg Config, log *slog.Logger) (*server.Server, error) {
	dir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("nats.store_dir: %w", err)
	}
	opts := &server.Options{
		ServerName:   "stickpoint",
		JetStream:    true,
		StoreDir:     dir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		NoSigs:       true,
		DontListen:   cfg.ListenAddr == "",
		MaxPayload:   8 << 20,
	}
	if cfg.ListenAddr != "" {
		host, port, _ := net.SplitHostPort(cfg.ListenAddr)
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("nats.listen_addr: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	s.SetLoggerV2(serverLogger{log.With("component", "nats-server")}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats-server not ready within 10s")
	}
	return s, nil
}

// ClientURL is the embedded server's client URL when it listens, else "".
func (b *Bus) ClientURL() string {
	if b.server == nil || b.cfg.ListenAddr == "" {
		return ""
	}
	return b.server.ClientURL()
}

// Config is the configuration the bus was started with.
func (b *Bus) Config() Config { return b.cfg }

// Drain lets pending publishes and subscriptions finish, closes the
// connection and stops the embedded server, bounded by ctx.
func (b *Bus) Drain(ctx context.Context) error {
	var err error
	b.once.Do(func() {
		if b.NC != nil && !b.NC.IsClosed() {
			closed := make(chan struct{})
			b.NC.SetClosedHandler(func(*nats.Conn) { close(closed) })
			if err = b.NC.Drain(); err == nil {
				select {
				case <-closed:
				case <-ctx.Done():
					b.NC.Close()
					err = fmt.Errorf("drain nats: %w", ctx.Err())
				}
			} else {
				b.NC.Close()
			}
		}
		b.shutdownServer()
	})
	return err
}

// Close closes at once, without draining. Safe to call more than once.
func (b *Bus) Close() {
	b.once.Do(func() {
		if b.NC != nil {
			b.NC.Close()
		}
		b.shutdownServer()
	})
}

func (b *Bus) shutdownServer() {
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
}

// serverLogger sends nats-server's log lines to slog.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

// Publish publishes data on subject to JetStream, with the trace context
// in its headers and, if msgID is set, as the Nats-Msg-Id the stream
// dedups on. It returns once the stream has stored it.
func (b *Bus) Publish(ctx context.Context, subject string, data []byte, msgID string) error {
	return b.PublishAll(ctx, []Outgoing{{Subject: subject, Data: data, MsgID: msgID}})
}

// Outgoing is a message for PublishAll.
type Outgoing struct {
	Subject string
	Data    []byte
	MsgID   string
}

// publishWindow is how many publishes PublishAll keeps in flight.
const publishWindow = 1000

// PublishAll publishes the messages as Publish does, many in flight at a
// time, and returns once the stream has stored them all, or the first
// error.
func (b *Bus) PublishAll(ctx context.Context, msgs []Outgoing) error {
	for window := range slices.Chunk(msgs, publishWindow) {
		var acks []jetstream.PubAckFuture
		for _, o := range window {
			msg := &nats.Msg{Subject: o.Subject, Data: o.Data, Header: nats.Header{}}
			InjectTrace(ctx, msg.Header)
			var opts []jetstream.PublishOpt
			if o.MsgID != "" {
				opts = append(opts, jetstream.WithMsgID(o.MsgID))
			}
			f, err := b.JS.PublishMsgAsync(msg, opts...)
			if err != nil {
				return fmt.Errorf("publish %s: %w", o.Subject, err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return fmt.Errorf("publish: %w", ctx.Err())
			}
		}
	}
	return nil
}
