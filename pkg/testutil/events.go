package testutil

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
)

// StoredEvent is a row of the events table (ingest's migrations), as the
// writer stores it, for tests of the services that read events.
type StoredEvent struct {
	Tenant, Account, MessageID, Type, Name, User string
	At                                           time.Time
	// Properties is JSON; empty for none.
	Properties string
}

var messageSeq atomic.Int64

// InsertEvents stores events as the writer would; a missing type is
// track, a missing messageId a fresh one.
func InsertEvents(t testing.TB, db chstore.Store, evs ...StoredEvent) {
	t.Helper()
	rows := make([][]any, 0, len(evs))
	for _, ev := range evs {
		if ev.Type == "" {
			ev.Type = "track"
		}
		if ev.MessageID == "" {
			ev.MessageID = fmt.Sprintf("m-%d", messageSeq.Add(1))
		}
		at := ev.At.UTC().Truncate(time.Second)
		rows = append(rows, []any{ev.Tenant, ev.Account, ev.MessageID, ev.Type, ev.Name, ev.User, "", "src",
			at, uint16(ev.At.Nanosecond() / 1e6), at, at, at, ev.Properties, "", "", ""})
	}
	cols := []string{"tenant_id", "account_id", "message_id", "type", "name", "user_id", "anonymous_id",
		"source_id", "timestamp", "timestamp_ms", "original_timestamp", "sent_at", "received_at", "properties", "traits", "context", "previous_id"}
	if err := db.Insert(t.Context(), "events", cols, rows); err != nil {
		t.Fatal(err)
	}
}

// InsertGroup stores a group call: its traits, and its event.
func InsertGroup(t testing.TB, db chstore.Store, tenant, account string, at time.Time, traits map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(traits)
	id := fmt.Sprintf("g-%d", messageSeq.Add(1))
	if err := db.Insert(t.Context(), "account_traits", accounts.TraitsColumns, [][]any{accounts.TraitsRow(tenant, account, raw, at, id)}); err != nil {
		t.Fatal(err)
	}
	InsertEvents(t, db, StoredEvent{Tenant: tenant, Account: account, MessageID: id, Type: "group", At: at})
}

// GenerateEvents fills a tenant with n track events spread evenly over
// accounts (acc-0, acc-1, ...), the names, 7 users per account, and the
// days between from and to, as DESIGN.md measured: a worst case, with no
// repeat to compress. ClickHouse generates the rows itself, in ten inserts.
// A third of the events have {"kind":"chart"} as properties, the rest
// {"kind":"pie"}.
func GenerateEvents(tb testing.TB, db chstore.Store, tenant string, n, accounts int, from, to time.Time, names []string) {
	tb.Helper()
	quoted := make([]string, len(names))
	for i, name := range names {
		quoted[i] = "'" + strings.ReplaceAll(name, "'", `\'`) + "'"
	}
	start, span := from.Unix(), int64(to.Sub(from)/time.Second)
	chunk := (n + 9) / 10
	for off := 0; off < n; off += chunk {
		q := fmt.Sprintf(`INSERT INTO events (tenant_id, account_id, message_id, type, name, user_id, anonymous_id, source_id,
			timestamp, timestamp_ms, original_timestamp, sent_at, received_at, properties, traits, context, previous_id)
			SELECT ?, concat('acc-', toString(number %% %d)), concat('m-', toString(number)), 'track',
				arrayElement([%s], intHash32(number) %% %d + 1), concat('u', toString(intHash32(number + 1) %% 7)), '', 'src',
				toDateTime(%d + intHash64(number) %% %d, 'UTC') AS ts, toUInt16(number %% 1000), ts, ts, ts,
				if(number %% 3 = 0, '{"kind":"chart"}', '{"kind":"pie"}'), '', '', ''
			FROM (SELECT number + %d AS number FROM numbers(%d))`,
			accounts, strings.Join(quoted, ","), len(names), start, span, off, min(chunk, n-off))
		if err := db.Exec(tb.Context(), q, tenant); err != nil {
			tb.Fatal(err)
		}
	}
}

// Migrations names a component's migrations, for Migrate.
type Migrations struct {
	Component string
	FS        fs.FS
}

// Migrate applies the components' migrations in order, failing the test
// on any error.
func Migrate(tb testing.TB, db chstore.Store, ms ...Migrations) {
	tb.Helper()
	for _, m := range ms {
		if _, err := chstore.Migrate(tb.Context(), db, m.Component, m.FS); err != nil {
			tb.Fatalf("migrate %s: %v", m.Component, err)
		}
	}
}
