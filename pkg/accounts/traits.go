// Package accounts is the one read path for what Stickpoint knows about a
// tenant's accounts from their group calls: their traits, merged as
// Segment merges them. Ingest's writer stores every group call's traits in
// the account_traits table (its migrations own the table); the services
// that score and alert on accounts read them here.
package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/stickpoint/stickpoint/pkg/chstore"
)

// Traits are an account's merged traits: each key's latest value, as JSON.
type Traits map[string]json.RawMessage

// Text is a trait's value as text: a string as is, anything else as its
// JSON; "" when missing or null.
func (t Traits) Text(name string) string {
	raw, ok := t[name]
	if !ok || string(raw) == "null" {
		return ""
	}
	if v, err := Value(raw); err == nil {
		if s, ok := v.(string); ok {
			return s
		}
	}
	return string(raw)
}

// Values are the traits decoded, as json.Unmarshal decodes each into an
// any; a value that does not decode is left out.
func (t Traits) Values() map[string]any {
	out := make(map[string]any, len(t))
	for k, raw := range t {
		if v, err := Value(raw); err == nil {
			out[k] = v
		}
	}
	return out
}

// ValuesOf are the named traits decoded, as Values decodes them: a reader
// of a few traits need not decode them all (health scoring reads the
// model's few for every account at every step).
func (t Traits) ValuesOf(names []string) map[string]any {
	out := make(map[string]any, len(names))
	for _, k := range names {
		raw, ok := t[k]
		if !ok {
			continue
		}
		if v, err := Value(raw); err == nil {
			out[k] = v
		}
	}
	return out
}

// Value decodes one JSON value as json.Unmarshal into an any does. Traits
// are read for every account evaluated and scored, and most are plain
// strings and numbers: those are decoded here without reflection (with it,
// decoding was a sixth of scoring); anything else goes to json.Unmarshal.
func Value(raw []byte) (any, error) {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' && plainString(raw[1:n-1]) {
		return string(raw[1 : n-1]), nil
	}
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		if f, err := strconv.ParseFloat(string(raw), 64); err == nil && json.Valid(raw) {
			return f, nil
		}
	}
	var v any
	err := json.Unmarshal(raw, &v)
	return v, err
}

// plainString: a JSON string's insides that need no unescaping: no escape
// or quote, no control character, valid UTF-8.
func plainString(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '\\' || c == '"' {
			return false
		}
	}
	return utf8.Valid(b)
}

// Call is one group call's traits, at the call's event time.
type Call struct {
	At     time.Time
	Traits json.RawMessage // a JSON object
}

// Merge merges group calls as Segment does: a later call overwrites the
// keys it sets and keeps the others. Later means a later event time, not a
// later arrival, so the answer doesn't depend on the order calls came in;
// calls at the same time are taken in the order of their bytes. A key set
// to null holds null. Traits that are not a JSON object are skipped.
func Merge(calls []Call) Traits {
	sorted := slices.Clone(calls)
	slices.SortFunc(sorted, func(a, b Call) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return bytes.Compare(a.Traits, b.Traits)
	})
	out := Traits{}
	for _, c := range sorted {
		_ = eachMember(c.Traits, func(k string, v []byte) { out[k] = json.RawMessage(v) })
	}
	return out
}

// eachMember calls f with each member of the JSON object raw.
func eachMember(raw []byte, f func(key string, value []byte)) error {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return fmt.Errorf("traits are not a JSON object")
	}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String() // before the next read voids the token
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		f(name, bytes.Clone(v))
	}
	return nil
}

// Reader reads accounts of a tenant.
type Reader struct{ db chstore.Store }

// NewReader reads from a store whose ingest migrations have run.
func NewReader(db chstore.Store) *Reader { return &Reader{db: db} }

// maxIDsPerQuery keeps IN lists under ClickHouse's max_query_size.
const maxIDsPerQuery = 1000

// Traits returns the merged traits of the given accounts of tenant. An
// account without any group call is absent from the map.
//
// Repeated group calls with the same traits (SDKs send one per session)
// are one row per distinct traits JSON, with its latest time, once merged;
// the query groups by it too, so the answer is the same before merges.
func (r *Reader) Traits(ctx context.Context, tenant string, ids []string) (map[string]Traits, error) {
	out := map[string]Traits{}
	for chunk := range slices.Chunk(ids, maxIDsPerQuery) {
		got, err := r.read(ctx, `SELECT account_id, any(traits), max(updated_at) FROM account_traits
			WHERE tenant_id = ? AND account_id IN ? GROUP BY account_id, traits_hash`, tenant, chstore.In(chunk))
		if err != nil {
			return nil, err
		}
		maps.Copy(out, got)
	}
	return out, nil
}

// TraitsBetween returns the merged traits of the tenant's accounts whose
// ids are between lo and hi, inclusive: a range of the sort key, for
// reading many accounts in order without sending their ids.
func (r *Reader) TraitsBetween(ctx context.Context, tenant, lo, hi string) (map[string]Traits, error) {
	return r.read(ctx, `SELECT account_id, any(traits), max(updated_at) FROM account_traits
		WHERE tenant_id = ? AND account_id >= ? AND account_id <= ? GROUP BY account_id, traits_hash`, tenant, lo, hi)
}

// read runs a query of (account, traits, time) rows and merges them.
func (r *Reader) read(ctx context.Context, q string, args ...any) (map[string]Traits, error) {
	rows, err := r.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read account traits: %w", err)
	}
	calls := map[string][]Call{}
	for rows.Next() {
		var id, traits string
		var at time.Time
		if err := rows.Scan(&id, &traits, &at); err != nil {
			return nil, err
		}
		calls[id] = append(calls[id], Call{At: at, Traits: json.RawMessage(traits)})
	}
	out := make(map[string]Traits, len(calls))
	for id, cs := range calls {
		out[id] = Merge(cs)
	}
	return out, nil
}

// TraitsColumns are account_traits' columns, in TraitsRow's order.
var TraitsColumns = []string{"tenant_id", "account_id", "traits", "traits_hash", "updated_at", "message_id"}

// TraitsRow is the account_traits row of a group call: its traits, their
// hash (identical traits collapse into one row, the latest), its event
// time and messageId.
func TraitsRow(tenant, account string, traits json.RawMessage, at time.Time, messageID string) []any {
	if len(traits) == 0 {
		traits = json.RawMessage("{}")
	}
	return []any{tenant, account, string(traits), traitsHash(traits), at.UTC(), messageID}
}

// WithEvents lists the tenant's accounts that have events, in order, for
// a backfill or a rollup build to page through in memory. It reads
// account_activity (a row or a few per account), not the events.
func (r *Reader) WithEvents(ctx context.Context, tenant string) ([]string, error) {
	rows, err := r.db.Query(ctx, `SELECT account_id FROM account_activity
		WHERE tenant_id = ? GROUP BY account_id ORDER BY account_id`, tenant)
	if err != nil {
		return nil, fmt.Errorf("list accounts with events: %w", err)
	}
	return rows.Strings()
}

// Activity returns the first and last event times of the given accounts
// of tenant, by account; an account without events is absent.
func (r *Reader) Activity(ctx context.Context, tenant string, ids []string) (map[string][2]time.Time, error) {
	out := map[string][2]time.Time{}
	for chunk := range slices.Chunk(ids, maxIDsPerQuery) {
		if err := r.activity(ctx, out, tenant, "account_id IN ?", chstore.In(chunk)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ActivityWhere is Activity of the tenant's accounts that cond, an SQL
// condition on account_id with its args, selects: a page's range of ids,
// or a list.
func (r *Reader) ActivityWhere(ctx context.Context, tenant, cond string, args ...any) (map[string][2]time.Time, error) {
	out := map[string][2]time.Time{}
	return out, r.activity(ctx, out, tenant, cond, args...)
}

// activity reads account_activity, which ingest's migrations keep as
// events are stored: the first and last event time of every event of the
// account, as min and max over the events give them.
func (r *Reader) activity(ctx context.Context, out map[string][2]time.Time, tenant, cond string, args ...any) error {
	rows, err := r.db.Query(ctx, `SELECT account_id, minMerge(first_event), maxMerge(last_event) FROM account_activity
		WHERE tenant_id = ? AND `+cond+` GROUP BY account_id`, append([]any{tenant}, args...)...)
	if err != nil {
		return fmt.Errorf("read account activity: %w", err)
	}
	for rows.Next() {
		var id string
		var a [2]time.Time
		if err := rows.Scan(&id, &a[0], &a[1]); err != nil {
			return err
		}
		out[id] = a
	}
	return nil
}
