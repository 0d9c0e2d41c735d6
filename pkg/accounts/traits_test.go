package accounts_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/accounts"
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
