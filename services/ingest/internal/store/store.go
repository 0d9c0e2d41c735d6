// Package store is the ingest service's ClickHouse access: writing events,
// users and accounts, and the event queries of stickpoint.events.v1.
package store

import (
	"context"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	accountspkg "github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
)

// Store reads and writes the ingest tables.
type Store struct{ db chstore.Store }

// New wraps a chstore.Store whose migrations have run.
func New(db chstore.Store) *Store { return &Store{db: db} }

var eventColumns = []string{"tenant_id", "account_id", "message_id", "type", "name", "user_id", "anonymous_id",
	"source_id", "timestamp", "timestamp_ms", "original_timestamp", "sent_at", "received_at", "properties", "traits", "context",
	"previous_id"}

// eventRows are the events table's row model, kept apart from
// events.Event, written through typed values (no boxing: a hundred
// thousand rows a second go this way).
type eventRows []events.Event

func (r eventRows) Len() int { return len(r) }

func (r eventRows) WriteRow(i int, w chstore.RowWriter) {
	e := &r[i]
	for _, s := range [...]string{e.TenantID, e.AccountID, e.MessageID, e.Type, e.Name, e.UserID, e.AnonymousID, e.SourceID} {
		w.String(s)
	}
	w.Time(e.Timestamp)
	w.UInt16(uint16(e.Timestamp.Nanosecond() / 1e6))
	w.Time(zeroTime(e.OriginalTimestamp))
	w.Time(zeroTime(e.SentAt))
	w.Time(e.ReceivedAt)
	for _, raw := range [...][]byte{e.Properties, e.Traits, e.Context} {
		w.String(unsafe.String(unsafe.SliceData(raw), len(raw))) // written out before the insert returns
	}
	w.String(e.PreviousID)
}

// zeroTime maps "unknown" to the Unix epoch, which DateTime can hold.
func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t.UTC()
}

// Write inserts events, and the user memberships and account traits that
// identify and group calls record, as one insert per table.
func (s *Store) Write(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var users, accounts [][]any
	for i := range evs {
		e := &evs[i]
		switch {
		case e.Type == events.TypeIdentify && e.UserID != "":
			users = append(users, []any{e.TenantID, e.UserID, e.AccountID, string(e.Traits), e.Timestamp.UTC(), e.MessageID})
		case e.Type == events.TypeGroup:
			accounts = append(accounts, accountspkg.TraitsRow(e.TenantID, e.AccountID, e.Traits, e.Timestamp, e.MessageID))
			if e.UserID != "" {
				users = append(users, []any{e.TenantID, e.UserID, e.AccountID, "", e.Timestamp.UTC(), e.MessageID})
			}
		}
	}
	if err := s.db.InsertFrom(ctx, "events", eventColumns, eventRows(evs)); err != nil {
		return err
	}
	if err := s.db.Insert(ctx, "users", []string{"tenant_id", "user_id", "account_id", "traits", "updated_at", "message_id"}, users); err != nil {
		return err
	}
	return s.db.Insert(ctx, "account_traits", accountspkg.TraitsColumns, accounts)
}

// Membership is a user's tie to an account, from a group call (or a call
// naming context.groupId), at that call's event time.
type Membership struct {
	AccountID string
	Since     time.Time
}

// Memberships returns each user's ties to accounts, in no order.
func (s *Store) Memberships(ctx context.Context, tenant string, users []string) (map[string][]Membership, error) {
	out := map[string][]Membership{}
	if len(users) == 0 {
		return out, nil
	}
	err := inChunks(users, func(chunk []string) error {
		r, err := s.db.Query(ctx, `SELECT DISTINCT user_id, account_id, updated_at FROM users
			WHERE tenant_id = ? AND user_id IN ? AND account_id != ''`, tenant, chstore.In(chunk))
		if err != nil {
			return fmt.Errorf("read user accounts: %w", err)
		}
		for r.Next() {
			var u string
			var m Membership
			if err := r.Scan(&u, &m.AccountID, &m.Since); err != nil {
				return err
			}
			out[u] = append(out[u], m)
		}
		return nil
	})
	return out, err
}

// inChunk is how many values an IN list holds: ClickHouse refuses a query
// over max_query_size (256 KiB by default).
const inChunk = 1000

// inChunks calls f with consecutive parts of values of at most inChunk.
func inChunks(values []string, f func([]string) error) error {
	for len(values) > 0 {
		n := min(len(values), inChunk)
		if err := f(values[:n]); err != nil {
			return err
		}
		values = values[n:]
	}
	return nil
}

// StoredIDs returns which of ids of tenant were stored since since (their
// claims in message_ids, which the materialized view writes with each
// events row).
func (s *Store) StoredIDs(ctx context.Context, tenant string, ids []string, since time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	err := inChunks(ids, func(chunk []string) error {
		r, err := s.db.Query(ctx, "SELECT DISTINCT message_id FROM message_ids WHERE tenant_id = ? AND message_id IN ? AND claimed_at >= ?",
			tenant, chstore.In(chunk), since)
		if err != nil {
			return fmt.Errorf("read message id claims: %w", err)
		}
		for r.Next() {
			var id string
			if err := r.Scan(&id); err != nil {
				return err
			}
			out[id] = true
		}
		return nil
	})
	return out, err
}

// claimPages splits the load of every claim's hash into this many queries,
// so no single result holds them all.
const claimPages = 16

// ClaimHashes calls each with the hash and claim time of every claim made
// since since, in pages.
func (s *Store) ClaimHashes(ctx context.Context, since time.Time, each func(hash uint64, claimedAt time.Time)) error {
	for page := range claimPages {
		r, err := s.db.Query(ctx, "SELECT id_hash, claimed_at FROM message_ids WHERE claimed_at >= ? AND id_hash % ? = ?",
			since, uint64(claimPages), uint64(page))
		if err != nil {
			return fmt.Errorf("load message id claims: %w", err)
		}
		for r.Next() {
			var h uint64
			var at time.Time
			if err := r.Scan(&h, &at); err != nil {
				return err
			}
			each(h, at)
		}
	}
	return nil
}

// DropClaimsBefore drops the daily partitions of claims made before day,
// and returns how many it dropped.
func (s *Store) DropClaimsBefore(ctx context.Context, day time.Time) (int, error) {
	r, err := s.db.Query(ctx, `SELECT DISTINCT partition FROM system.parts
		WHERE database = currentDatabase() AND table = 'message_ids' AND active`)
	if err != nil {
		return 0, fmt.Errorf("list message id partitions: %w", err)
	}
	limit, _ := strconv.ParseUint(day.UTC().Format("20060102"), 10, 32)
	dropped := 0
	for r.Next() {
		var p string
		if err := r.Scan(&p); err != nil {
			return dropped, err
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil || n >= limit {
			continue
		}
		if err := s.db.Exec(ctx, "ALTER TABLE message_ids DROP PARTITION ?", uint32(n)); err != nil {
			return dropped, fmt.Errorf("drop message id partition %s: %w", p, err)
		}
		dropped++
	}
	return dropped, nil
}

// Filter selects events for Count.
type Filter struct {
	AccountID string
	Type      string
	Name      string
	From, To  time.Time // To is exclusive; zero means unbounded
}

// Count is the number of distinct events (by messageId) matching f. It is
// the same before and after ClickHouse merges duplicate rows.
func (s *Store) Count(ctx context.Context, tenant string, f Filter) (uint64, error) {
	q := "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ?"
	args := []any{tenant}
	if f.AccountID != "" {
		q += " AND account_id = ?"
		args = append(args, f.AccountID)
	}
	if f.Type != "" {
		q += " AND type = ?"
		args = append(args, f.Type)
	}
	if f.Name != "" {
		q += " AND name = ?"
		args = append(args, f.Name)
	}
	if !f.From.IsZero() {
		q += " AND timestamp >= ?"
		args = append(args, f.From)
	}
	if !f.To.IsZero() {
		q += " AND timestamp < ?"
		args = append(args, f.To)
	}
	r, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("count events: %w", err)
	}
	var n uint64
	if r.Next() {
		if err := r.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Recent returns the latest events of tenant (of one account if given),
// newest first, each messageId once.
func (s *Store) Recent(ctx context.Context, tenant, account string, limit int) ([]events.Event, error) {
	q := `SELECT message_id, type, name, user_id, anonymous_id, account_id, source_id,
		timestamp, timestamp_ms, received_at, properties, traits, context
		FROM events WHERE tenant_id = ?`
	args := []any{tenant}
	if account != "" {
		q += " AND account_id = ?"
		args = append(args, account)
	}
	q += " ORDER BY timestamp DESC, timestamp_ms DESC, message_id LIMIT 1 BY message_id LIMIT ?"
	args = append(args, limit)
	r, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("recent events: %w", err)
	}
	var out []events.Event
	for r.Next() {
		var e events.Event
		var ms uint16
		var props, traits, ctxJSON string
		if err := r.Scan(&e.MessageID, &e.Type, &e.Name, &e.UserID, &e.AnonymousID, &e.AccountID, &e.SourceID,
			&e.Timestamp, &ms, &e.ReceivedAt, &props, &traits, &ctxJSON); err != nil {
			return nil, err
		}
		e.TenantID = tenant
		e.Timestamp = e.Timestamp.Add(time.Duration(ms) * time.Millisecond)
		e.Properties, e.Traits, e.Context = raw(props), raw(traits), raw(ctxJSON)
		out = append(out, e)
	}
	return out, nil
}

func raw(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// RejectionCount is a number of refused requests for one API and reason.
type RejectionCount struct {
	API, Reason string
	Requests    uint64
}

// AddRejections adds refused-request counts (tenant, minute, api, reason, n).
func (s *Store) AddRejections(ctx context.Context, rows [][]any) error {
	return s.db.Insert(ctx, "ingest_rejections", []string{"tenant_id", "minute", "api", "reason", "requests"}, rows)
}

// Stats is what ingest accepted and refused for a tenant.
type Stats struct {
	// Accepted are the distinct events stored; Unattributed, the track,
	// page and screen events among them without an account.
	Accepted, Unattributed uint64
	// Rejections are refused requests by API and reason.
	Rejections []RejectionCount
	// RejectedCalls are calls refused inside otherwise stored batches.
	RejectedCalls uint64
}

// endOfTime is DateTime's last day, for unbounded ranges.
var endOfTime = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC)

// Stats returns what was received in [from, to). Zero times are unbounded.
func (s *Store) Stats(ctx context.Context, tenant string, from, to time.Time) (Stats, error) {
	if to.IsZero() {
		to = endOfTime
	}
	var st Stats
	r, err := s.db.Query(ctx, `SELECT uniqExact(message_id), uniqExactIf(message_id, account_id = '' AND type IN ('track', 'page', 'screen'))
		FROM events WHERE tenant_id = ? AND received_at >= ? AND received_at < ?`, tenant, from, to)
	if err != nil {
		return st, fmt.Errorf("count accepted events: %w", err)
	}
	if r.Next() {
		if err := r.Scan(&st.Accepted, &st.Unattributed); err != nil {
			return st, err
		}
	}
	r, err = s.db.Query(ctx, `SELECT api, reason, sum(requests) AS n FROM ingest_rejections
		WHERE tenant_id = ? AND minute >= ? AND minute < ? GROUP BY api, reason ORDER BY n DESC, api, reason`,
		tenant, from.Truncate(time.Minute), to)
	if err != nil {
		return st, fmt.Errorf("read rejections: %w", err)
	}
	for r.Next() {
		var c RejectionCount
		if err := r.Scan(&c.API, &c.Reason, &c.Requests); err != nil {
			return st, err
		}
		st.Rejections = append(st.Rejections, c)
	}
	r, err = s.db.Query(ctx, "SELECT sum(calls) FROM ingest_warnings WHERE tenant_id = ? AND minute >= ? AND minute < ?",
		tenant, from.Truncate(time.Minute), to)
	if err != nil {
		return st, fmt.Errorf("count rejected calls: %w", err)
	}
	if r.Next() {
		if err := r.Scan(&st.RejectedCalls); err != nil {
			return st, err
		}
	}
	return st, nil
}

// Warning is a kind of refused call and how often it happened.
type Warning struct {
	API, Code, Field string
	Calls            uint64
	LastSeen         time.Time
	// ExampleMessage and ExampleCall are the latest refused call of the
	// kind, whenever it was.
	ExampleMessage, ExampleCall string
}

// AddWarnings adds refused-call counts (tenant, minute, api, code, field, n).
func (s *Store) AddWarnings(ctx context.Context, counts [][]any) error {
	return s.db.Insert(ctx, "ingest_warnings", []string{"tenant_id", "minute", "api", "code", "field", "calls"}, counts)
}

// AddWarningExamples records refused calls as the latest examples of their
// kind (tenant, api, code, field, seen, message, call).
func (s *Store) AddWarningExamples(ctx context.Context, examples [][]any) error {
	return s.db.Insert(ctx, "ingest_warning_samples", []string{"tenant_id", "api", "code", "field", "seen_at", "message", "call"}, examples)
}

// Warnings lists tenant's refused calls in [from, to) by kind, most first.
func (s *Store) Warnings(ctx context.Context, tenant string, from, to time.Time) ([]Warning, error) {
	if to.IsZero() {
		to = endOfTime
	}
	r, err := s.db.Query(ctx, `SELECT api, code, field, sum(calls) AS n, max(minute) FROM ingest_warnings
		WHERE tenant_id = ? AND minute >= ? AND minute < ? GROUP BY api, code, field ORDER BY n DESC, api, code, field`,
		tenant, from.Truncate(time.Minute), to)
	if err != nil {
		return nil, fmt.Errorf("read ingest warnings: %w", err)
	}
	var out []Warning
	for r.Next() {
		var w Warning
		if err := r.Scan(&w.API, &w.Code, &w.Field, &w.Calls, &w.LastSeen); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	r, err = s.db.Query(ctx, `SELECT api, code, field, argMax(message, seen_at), argMax(call, seen_at), max(seen_at)
		FROM ingest_warning_samples WHERE tenant_id = ? GROUP BY api, code, field`, tenant)
	if err != nil {
		return nil, fmt.Errorf("read ingest warning examples: %w", err)
	}
	for r.Next() {
		var api, code, field, msg, call string
		var seen time.Time
		if err := r.Scan(&api, &code, &field, &msg, &call, &seen); err != nil {
			return nil, err
		}
		for i := range out {
			if w := &out[i]; w.API == api && w.Code == code && w.Field == field {
				w.ExampleMessage, w.ExampleCall = msg, call
				if seen.After(w.LastSeen) {
					w.LastSeen = seen
				}
			}
		}
	}
	return out, nil
}
