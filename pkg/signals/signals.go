// Package signals is how a detection service publishes what it found
// (stickpoint.signals.v1.Signal, DESIGN.md "Detection") and how people list
// it. A signal goes to the SIGNALS stream on signals.<tenant>.<kind>, with
// its id as the Nats-Msg-Id, and into the signals table.
package signals

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
)

// Component owns the signals table.
const Component = "signals"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the signals table's migrations.
var Migrations, _ = fs.Sub(migrationFiles, "migrations")

// ID is a signal's id: a hash of the tenant, account, kind and the
// transition's own identity, so the same transition always gets the same
// id, whoever finds it and however often.
//
// A backfill makes one per signal (500,000 for 100,000 accounts), so the
// hashed text is built in one buffer, not printed into the hash: 215 ns
// against 525 ns each (BenchmarkID). TestIDIsStable pins the output.
func ID(tenant, account, kind, identity string) string {
	b := make([]byte, 0, 16+len(tenant)+len(account)+len(kind)+len(identity))
	for _, part := range []string{tenant, account, kind, identity} {
		// Length-prefixed, so no two lists of parts collide.
		b = strconv.AppendInt(b, int64(len(part)), 10)
		b = append(append(b, ':'), part...)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Emitter publishes signals and records them.
type Emitter struct {
	bus    *natsjs.Bus
	db     chstore.Store
	traits *accounts.Reader
	// memory and history, when set, replace the signals table and
	// account_traits (UseMemory).
	memory  *Memory
	history *accounts.History
}

// NewEmitter publishes on bus and records in db.
func NewEmitter(bus *natsjs.Bus, db chstore.Store) *Emitter {
	return &Emitter{bus: bus, db: db, traits: accounts.NewReader(db)}
}

// Snapshot is the account as a signal carries it: its name (the "name"
// trait), its traits, and the fit and band when the caller knows them.
func Snapshot(traits accounts.Traits, fit, band string) *signalsv1.AccountSnapshot {
	if traits == nil {
		traits = accounts.Traits{}
	}
	b, _ := json.Marshal(traits) // a map of raw JSON values always marshals
	return &signalsv1.AccountSnapshot{Name: traits.Text("name"), TraitsJson: string(b), Fit: fit, Band: band}
}

// snapshot gives each signal without an account snapshot one, from the
// account's traits as stored now: alerting routes and filters on them and
// reads nothing but signals (DESIGN.md, "Detection", point 7).
func (e *Emitter) snapshot(ctx context.Context, sigs []*signalsv1.Signal) error {
	missing := map[string][]string{} // tenant -> accounts
	for _, s := range sigs {
		if s.GetAccount() == nil {
			missing[s.GetTenantId()] = append(missing[s.GetTenantId()], s.GetAccountId())
		}
	}
	for tenant, ids := range missing {
		var traits map[string]accounts.Traits
		var err error
		if e.history != nil {
			traits = e.history.Traits(tenant, ids)
		} else if traits, err = e.traits.Traits(ctx, tenant, ids); err != nil {
			return err
		}
		for _, s := range sigs {
			if s.GetAccount() == nil && s.GetTenantId() == tenant {
				s.Account = Snapshot(traits[s.GetAccountId()], "", "")
			}
		}
	}
	return nil
}

var columns = []string{"tenant_id", "account_id", "signal_id", "kind", "severity", "occurred_at", "detected_at", "summary", "payload"}

// Emit publishes each signal, then records them all. A caller that fails
// after Emit (or an Emit that fails halfway) emits again: the stream drops
// a repeat within its duplicate window and the table keeps one row per id,
// and consumers dedup on the id beyond that.
func (e *Emitter) Emit(ctx context.Context, sigs []*signalsv1.Signal) error {
	published, err := e.Publish(ctx, sigs)
	if err != nil || len(published) == 0 {
		return err
	}
	if e.memory != nil {
		e.memory.add(sigs, published)
		return nil
	}
	return record(ctx, e.db, sigs, published)
}

// record inserts signals into the signals table, each with the message
// as published.
func record(ctx context.Context, db chstore.Store, sigs []*signalsv1.Signal, published [][]byte) error {
	rows := make([][]any, 0, len(sigs))
	for i, s := range sigs {
		// The payload is the message as published, in base64: a tenth of
		// the cost of protobuf JSON when a backfill emits many.
		rows = append(rows, []any{s.GetTenantId(), s.GetAccountId(), s.GetId(), s.GetKind(), s.GetSeverity().String(),
			s.GetOccurredAt().AsTime().UTC(), s.GetDetectedAt().AsTime().UTC(), s.GetSummary(), base64.StdEncoding.EncodeToString(published[i])})
	}
	if err := db.Insert(ctx, "signals", columns, rows); err != nil {
		return fmt.Errorf("record signals: %w", err)
	}
	return nil
}

// Publish publishes each signal without recording it, and returns each as
// published. It is for a path that must be fast and is followed by one that
// emits the same signals (the same ids) with Emit: health scoring's
// immediate signal of a cancellation request, which a ClickHouse insert
// under load would hold up.
func (e *Emitter) Publish(ctx context.Context, sigs []*signalsv1.Signal) ([][]byte, error) {
	if len(sigs) == 0 {
		return nil, nil
	}
	if err := e.snapshot(ctx, sigs); err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(sigs))
	msgs := make([]natsjs.Outgoing, 0, len(sigs))
	for _, s := range sigs {
		data, err := proto.Marshal(s)
		if err != nil {
			return nil, err
		}
		out = append(out, data)
		msgs = append(msgs, natsjs.Outgoing{Subject: natsjs.SignalSubject(s.GetTenantId(), s.GetKind()), Data: data, MsgID: s.GetId()})
	}
	return out, e.bus.PublishAll(ctx, msgs)
}

// Filter selects signals to list.
type Filter struct {
	AccountID string
	Kind      string
	Limit     int
}

// List returns a tenant's signals, newest first (by detection, then by
// event time).
func List(ctx context.Context, db chstore.Store, tenant string, f Filter) ([]*signalsv1.Signal, error) {
	q := "SELECT payload FROM signals FINAL WHERE tenant_id = ?"
	args := []any{tenant}
	if f.AccountID != "" {
		q += " AND account_id = ?"
		args = append(args, f.AccountID)
	}
	if f.Kind != "" {
		q += " AND kind = ?"
		args = append(args, f.Kind)
	}
	q += " ORDER BY detected_at DESC, occurred_at DESC, signal_id LIMIT ?"
	args = append(args, f.Limit)
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list signals: %w", err)
	}
	var out []*signalsv1.Signal
	for rows.Next() {
		var payload string
		if err := rows.Scan(&payload); err != nil {
			return nil, err
		}
		data, err := base64.StdEncoding.DecodeString(payload)
		if err != nil {
			return nil, fmt.Errorf("signal payload: %w", err)
		}
		s, err := Decode(data)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Decode reads a signal from a SIGNALS message.
func Decode(data []byte) (*signalsv1.Signal, error) {
	s := &signalsv1.Signal{}
	if err := proto.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("signal: %w", err)
	}
	return s, nil
}
