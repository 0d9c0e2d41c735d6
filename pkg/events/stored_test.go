package events

import (
	"reflect"
	"testing"
	"time"
)

func TestStoredNoticesGroupAccountsByTenant(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	evs := []Event{
		{TenantID: "t1", AccountID: "b", Timestamp: at.Add(time.Hour)},
		{TenantID: "t1", AccountID: "a", Timestamp: at},
		{TenantID: "t1", AccountID: "b", Timestamp: at.Add(2 * time.Hour)},
		{TenantID: "t1", AccountID: "", Timestamp: at.Add(-time.Hour)}, // unattributed: no account to recompute
		{TenantID: "t2", AccountID: "a", Timestamp: at},
	}
	got := StoredNotices(evs)
	want := []StoredNotice{
		{TenantID: "t1", Accounts: []string{"a", "b"}, From: at, To: at.Add(2 * time.Hour)},
		{TenantID: "t2", Accounts: []string{"a"}, From: at, To: at},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}
