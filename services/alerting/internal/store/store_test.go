package store

import (
	"context"
	"os"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/testutil"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// Each decodes an alert once per revision: an unchanged alert is the
// record decoded before, a changed one is read again.
func TestEachReadsAChangedAlertAgain(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, testutil.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	put := func(id, summary string) {
		t.Helper()
		if _, err := s.Update(ctx, "t1", id, func(*lifecycle.Record) (*lifecycle.Record, error) {
			return &lifecycle.Record{Tenant: "t1", Alert: &alertsv1.Alert{Id: id, Summary: summary}}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	each := func(ctx context.Context, tenant string) map[string]*lifecycle.Record {
		t.Helper()
		out := map[string]*lifecycle.Record{}
		if err := s.Each(ctx, tenant, func(r *lifecycle.Record) error { out[r.Alert.GetId()] = r; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	put("a1", "first")
	put("a2", "other")
	before := each(ctx, "")
	put("a1", "second")
	after := each(ctx, "")
	if got := after["a1"].Alert.GetSummary(); got != "second" {
		t.Errorf("a1 after its change: %q, want second", got)
	}
	if after["a2"] != before["a2"] {
		t.Error("the unchanged a2 was decoded again")
	}
	if got := each(ctx, "t1")["a1"].Alert.GetSummary(); got != "second" {
		t.Errorf("a1 by tenant: %q", got)
	}
}
