package store

import (
	"testing"

	"github.com/stickpoint/stickpoint/pkg/testutil"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
)

// Update returns the record as it stands after the call, stored or not:
// the alerter hands on what an unchanged record's outbox holds without
// reading it again.
func TestUpdateReturnsTheRecordAsItStands(t *testing.T) {
	s, err := Open(t.Context(), testutil.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(*lifecycle.Record) (*lifecycle.Record, error) { return nil, nil }

	rec, err := s.Update(t.Context(), "acme", "a1", unchanged)
	if err != nil || rec != nil {
		t.Fatalf("no alert, no change: got %v, %v; want nil, nil", rec, err)
	}
	if _, err := s.Get(t.Context(), "acme", "a1"); err != ErrNotFound {
		t.Fatalf("a change that returns nil stored something: %v", err)
	}

	stored, err := s.Update(t.Context(), "acme", "a1", func(cur *lifecycle.Record) (*lifecycle.Record, error) {
		return &lifecycle.Record{Tenant: "acme", Alert: &alertsv1.Alert{Id: "a1", Revision: 1},
			Outbox: []lifecycle.Job{{Tenant: "acme", AlertID: "a1", Channel: "ops", DeliveryID: "d1"}}}, nil
	})
	if err != nil || stored == nil || stored.Alert.GetRevision() != 1 {
		t.Fatalf("a change: got %v, %v; want the record stored", stored, err)
	}

	rec, err = s.Update(t.Context(), "acme", "a1", unchanged)
	if err != nil {
		t.Fatal(err)
	}
	if rec == nil || rec.Alert.GetId() != "a1" || len(rec.Outbox) != 1 || rec.Outbox[0].DeliveryID != "d1" {
		t.Fatalf("no change to a stored alert: got %+v; want it as stored, outbox and all", rec)
	}
}
