// Package store is the ingest service's ClickHouse access: writing events,
// users and accounts, and the event queries of stickpoint.events.v1.
package store

import (
	"context"
	"fmt"
	"time"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/events"
)

// Store reads and writes the ingest tables.
type Store struct{ db chstore.Store }

// New wraps a chstore.Store whose migrations have run.
func New(db chstore.Store) *Store { return &Store{db: db} }

var eventColumns = []string{"tenant_id", "account_id", "message_id", "type", "name", "user_id", "anonymous_id",
	"source_id", "timestamp", "timestamp_ms", "original_timestamp", "sent_at", "received_at", "properties", "traits", "context"}

// eventRow is the events table's row model, kept apart from events.Event.
func eventRow(e *events.Event) []any {
	return []any{e.TenantID, e.AccountID, e.MessageID, e.Type, e.Name, e.UserID, e.AnonymousID,
		e.SourceID, e.Timestamp.UTC().Truncate(time.Second), uint16(e.Timestamp.Nanosecond() / 1e6),
		zeroTime(e.OriginalTimestamp), zeroTime(e.SentAt), e.ReceivedAt.UTC(),
		string(e.Properties), string(e.Traits), string(e.Context)}
}

// zeroTime maps "unknown" to the Unix epoch, which DateTime can hold.
func zeroTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t.UTC()
}

// Write inserts events, and the user and account records that identify and
// group calls update, as one insert per table.
func (s *Store) Write(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	rows := make([][]any, 0, len(evs))
	var users, accounts [][]any
	for i := range evs {
		e := &evs[i]
		rows = append(rows, eventRow(e))
		switch {
		case e.Type == events.TypeIdentify && e.UserID != "":
			users = append(users, []any{e.TenantID, e.UserID, e.AccountID, string(e.Traits), e.Timestamp.UTC(), e.MessageID})
		case e.Type == events.TypeGroup:
			accounts = append(accounts, []any{e.TenantID, e.AccountID, string(e.Traits), e.Timestamp.UTC(), e.MessageID})
			if e.UserID != "" {
				users = append(users, []any{e.TenantID, e.UserID, e.AccountID, "", e.Timestamp.UTC(), e.MessageID})
			}
		}
	}
	if err := s.db.Insert(ctx, "events", eventColumns, rows); err != nil {
		return err
	}
	if err := s.db.Insert(ctx, "users", []string{"tenant_id", "user_id", "account_id", "traits", "updated_at", "message_id"}, users); err != nil {
		return err
	}
	return s.db.Insert(ctx, "accounts", []string{"tenant_id", "account_id", "traits", "updated_at", "message_id"}, accounts)
}

// UserAccounts returns the account of each user's latest group call.
func (s *Store) UserAccounts(ctx context.Context, tenant string, users []string) (map[string]string, error) {
	out := map[string]string{}
	if len(users) == 0 {
		return out, nil
	}
	r, err := s.db.Query(ctx, `SELECT user_id, argMax(account_id, updated_at) FROM users
		WHERE tenant_id = ? AND user_id IN ? AND account_id != '' GROUP BY user_id`, tenant, chstore.In(users))
	if err != nil {
		return nil, fmt.Errorf("read user accounts: %w", err)
	}
	for r.Next() {
		var u, a string
		if err := r.Scan(&u, &a); err != nil {
			return nil, err
		}
		out[u] = a
	}
	return out, nil
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

// Stats returns the distinct events received in [from, to) and the refused
// requests by API and reason. Zero times are unbounded.
func (s *Store) Stats(ctx context.Context, tenant string, from, to time.Time) (uint64, []RejectionCount, error) {
	if to.IsZero() {
		to = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC) // DateTime's end
	}
	r, err := s.db.Query(ctx, "SELECT uniqExact(message_id) FROM events WHERE tenant_id = ? AND received_at >= ? AND received_at < ?", tenant, from, to)
	if err != nil {
		return 0, nil, fmt.Errorf("count accepted events: %w", err)
	}
	var accepted uint64
	if r.Next() {
		if err := r.Scan(&accepted); err != nil {
			return 0, nil, err
		}
	}
	r, err = s.db.Query(ctx, `SELECT api, reason, sum(requests) AS n FROM ingest_rejections
		WHERE tenant_id = ? AND minute >= ? AND minute < ? GROUP BY api, reason ORDER BY n DESC, api, reason`,
		tenant, from.Truncate(time.Minute), to)
	if err != nil {
		return 0, nil, fmt.Errorf("read rejections: %w", err)
	}
	var out []RejectionCount
	for r.Next() {
		var c RejectionCount
		if err := r.Scan(&c.API, &c.Reason, &c.Requests); err != nil {
			return 0, nil, err
		}
		out = append(out, c)
	}
	return accepted, out, nil
}
