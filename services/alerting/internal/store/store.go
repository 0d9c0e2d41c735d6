// Package store keeps alerts, durable and shared by every replica, in the
// JetStream key-value bucket "alerts" (key <tenant>.<alert id>), changed
// only by compare-and-set, so two replicas never both apply a change. A
// change's notifications and its announcement sit in the record (its
// outbox) until Flush hands them to the DELIVERIES and ALERTS streams,
// with ids those streams dedup on: a crash in between re-sends them, never
// loses them.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
)

// Bucket is the key-value bucket of alerts.
const Bucket = "alerts"

// HeaderChange names an ALERTS message's change (opened, updated, ...).
const HeaderChange = "Stickpoint-Change"

// ErrNotFound is an alert that doesn't exist (in the caller's tenant).
var ErrNotFound = errors.New("alert not found")

// Store reads and changes alerts.
type Store struct {
	bus     *natsjs.Bus
	kv      jetstream.KeyValue
	records records // the bucket, or memory after UseMemory
}

// Open opens (or creates) the bucket.
func Open(ctx context.Context, bus *natsjs.Bus) (*Store, error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Stickpoint alerts: one per tenant, account and kind, with its lifecycle and delivery log.",
	})
	if err != nil {
		return nil, err
	}
	return &Store{bus: bus, kv: kv, records: bucket{kv}}, nil
}

// UseMemory keeps the alerts in memory from now on, not in the bucket: a
// backtest, which changes them a few times for every signal, on a
// simulated clock. What they announce and deliver still goes to the
// streams. Call it before any alert is stored.
func (s *Store) UseMemory() { s.records = newMemory() }

// SaveMemory writes the alerts kept in memory to the bucket: a backtest
// whose data folder is kept, to inspect.
func (s *Store) SaveMemory(ctx context.Context) error {
	if m, ok := s.records.(*memory); ok {
		return m.save(ctx, s.kv)
	}
	return nil
}

// Healthy reports whether the bucket answers.
func (s *Store) Healthy(ctx context.Context) error {
	if _, err := s.kv.Status(ctx); err != nil {
		return fmt.Errorf("alerts bucket: %w", err)
	}
	return nil
}

func key(tenant, id string) string { return tenant + "." + id }

// validID keeps an id from a request out of the key's subject syntax.
func validID(id string) bool {
	return id != "" && len(id) <= 64 && !strings.ContainsAny(id, ".*> \t")
}

// Get returns tenant's alert id.
func (s *Store) Get(ctx context.Context, tenant, id string) (*lifecycle.Record, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	rec, _, err := s.get(ctx, key(tenant, id))
	if err == nil && rec == nil {
		return nil, ErrNotFound
	}
	return rec, err
}

func (s *Store) get(ctx context.Context, k string) (*lifecycle.Record, uint64, error) {
	b, rev, err := s.records.get(ctx, k)
	if err != nil {
		return nil, 0, fmt.Errorf("read alert: %w", err)
	}
	if b == nil {
		return nil, 0, nil
	}
	rec, err := lifecycle.Unmarshal(b)
	return rec, rev, err
}

// Update applies change to tenant's alert id (nil when there is none) and
// stores what it returns, retrying on a concurrent change. A nil result
// stores nothing. It returns the record as it stands after the call: the
// one stored, or, when change stored nothing, the one change was given
// (nil when there is none), so a caller need not read it again.
func (s *Store) Update(ctx context.Context, tenant, id string, change func(*lifecycle.Record) (*lifecycle.Record, error)) (*lifecycle.Record, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	k := key(tenant, id)
	for range 20 {
		cur, rev, err := s.get(ctx, k)
		if err != nil {
			return nil, err
		}
		next, err := change(cur)
		if err != nil {
			return nil, err
		}
		if next == nil {
			return cur, nil
		}
		b, err := next.Marshal()
		if err != nil {
			return nil, err
		}
		err = s.records.put(ctx, k, b, rev)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, errConflict) {
			return nil, fmt.Errorf("store alert: %w", err)
		}
	}
	return nil, fmt.Errorf("store alert %s: too many concurrent changes", id)
}

// Each calls f with every stored alert of tenant ("" for every tenant).
func (s *Store) Each(ctx context.Context, tenant string, f func(*lifecycle.Record) error) error {
	prefix := ""
	if tenant != "" {
		prefix = tenant + "."
	}
	var ferr error // f's, returned as it is
	err := s.records.each(ctx, prefix, func(b []byte) error {
		rec, err := lifecycle.Unmarshal(b)
		if err != nil {
			return err
		}
		ferr = f(rec)
		return ferr
	})
	if ferr != nil {
		return ferr
	}
	if err != nil {
		return fmt.Errorf("list alerts: %w", err)
	}
	return nil
}

// Flush hands a record's outbox to the DELIVERIES stream and its change to
// the ALERTS stream, then clears them from the record. Both streams dedup
// on the ids, so flushing twice sends once.
func (s *Store) Flush(ctx context.Context, rec *lifecycle.Record) error {
	if rec == nil || (len(rec.Outbox) == 0 && rec.Announce == "") {
		return nil
	}
	var out []natsjs.Outgoing
	for _, j := range rec.Outbox {
		b, _ := json.Marshal(j)
		out = append(out, natsjs.Outgoing{Subject: natsjs.DeliverySubject(rec.Tenant), Data: b, MsgID: j.DeliveryID})
	}
	if err := s.bus.PublishAll(ctx, out); err != nil {
		return err
	}
	if rec.Announce != "" {
		if err := s.announce(ctx, rec); err != nil {
			return err
		}
	}
	sent, announced := rec.Outbox, rec.Announce
	_, err := s.Update(ctx, rec.Tenant, rec.Alert.GetId(), func(cur *lifecycle.Record) (*lifecycle.Record, error) {
		if cur == nil {
			return nil, nil
		}
		next := cur.Clone()
		next.Outbox = slices.DeleteFunc(next.Outbox, func(j lifecycle.Job) bool {
			return slices.ContainsFunc(sent, func(o lifecycle.Job) bool { return o.DeliveryID == j.DeliveryID })
		})
		if next.Alert.GetRevision() == rec.Alert.GetRevision() && next.Announce == announced {
			next.Announce = ""
		}
		if len(next.Outbox) == len(cur.Outbox) && next.Announce == cur.Announce {
			return nil, nil
		}
		return next, nil
	})
	return err
}

func (s *Store) announce(ctx context.Context, rec *lifecycle.Record) error {
	data, err := proto.Marshal(rec.Alert)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: natsjs.AlertSubject(rec.Tenant), Data: data, Header: nats.Header{}}
	msg.Header.Set(HeaderChange, rec.Announce)
	natsjs.InjectTrace(ctx, msg.Header)
	_, err = s.bus.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s/%d", rec.Alert.GetId(), rec.Alert.GetRevision())))
	if err != nil {
		return fmt.Errorf("announce alert: %w", err)
	}
	return nil
}
