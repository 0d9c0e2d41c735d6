package accounts_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
)

func TestMergeOverwritesTheKeysALaterCallSets(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	calls := []accounts.Call{
		{At: t0.Add(2 * time.Hour), Traits: json.RawMessage(`{"plan":"team","seats":12}`)},
		{At: t0, Traits: json.RawMessage(`{"plan":"pro","name":"Acme","csm_email":"ann@vendor.example"}`)},
		{At: t0.Add(time.Hour), Traits: json.RawMessage(`{"seats":10,"address":{"city":"Lyon"},"csm_email":null}`)},
		{At: t0.Add(3 * time.Hour), Traits: json.RawMessage(`not json`)},
	}
	want := accounts.Traits{
		"plan": json.RawMessage(`"team"`), "seats": json.RawMessage(`12`), "name": json.RawMessage(`"Acme"`),
		"address": json.RawMessage(`{"city":"Lyon"}`), "csm_email": json.RawMessage(`null`),
	}
	require.Equal(t, want, accounts.Merge(calls))
	// The order calls arrive in does not matter; only their times do.
	reversed := []accounts.Call{calls[3], calls[2], calls[1], calls[0]}
	require.Equal(t, want, accounts.Merge(reversed))
	require.Empty(t, accounts.Merge(nil))
}

func TestEventsSinceReadsAllOnlyForTheUnknown(t *testing.T) {
	since := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	ids := []string{"a", "b", "c"}
	known := func(id string) bool { return id != "b" }
	if cond, args := accounts.EventsSince(ids, time.Time{}, known); cond != "" || args != nil {
		t.Errorf("since zero: %q %v", cond, args)
	}
	if cond, args := accounts.EventsSince(ids, since, func(string) bool { return false }); cond != "" || args != nil {
		t.Errorf("none known: %q %v", cond, args)
	}
	if cond, args := accounts.EventsSince(ids, since, func(string) bool { return true }); cond != " AND timestamp >= ?" || len(args) != 1 || args[0] != since {
		t.Errorf("all known: %q %v", cond, args)
	}
	cond, args := accounts.EventsSince(ids, since, known)
	if cond != " AND (timestamp >= ? OR account_id IN ?)" || len(args) != 2 || args[0] != since || fmt.Sprint(args[1]) != fmt.Sprint(chstore.In([]string{"b"})) {
		t.Errorf("b unknown: %q %v", cond, args)
	}
}
