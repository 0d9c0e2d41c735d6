package testutil

import (
	"encoding/json"
	"fmt"
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
