package signals

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
)

// The memory keeps one signal per id, as the table does, and finds an
// account's earliest signal of some kinds at or before a time.
func TestMemoryKeepsOneSignalPerIDAndFindsTheFirst(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	sig := func(id, tenant, account, kind string, h int) *signalsv1.Signal {
		return &signalsv1.Signal{Id: id, TenantId: tenant, AccountId: account, Kind: kind, OccurredAt: timestamppb.New(t0.Add(time.Duration(h) * time.Hour))}
	}
	m := NewMemory()
	m.add([]*signalsv1.Signal{sig("1", "t1", "a", "health_red", 5), sig("2", "t1", "a", "onboarding_late", 3), sig("3", "t1", "a", "health_changed", 1)})
	m.add([]*signalsv1.Signal{sig("2", "t1", "a", "onboarding_late", 3), sig("4", "t2", "a", "health_red", 0)})
	if n := len(m.Signals("t1")); n != 3 {
		t.Errorf("t1 has %d signals, want 3 (one per id)", n)
	}
	risks := []string{"health_red", "onboarding_late"}
	for _, c := range []struct {
		at   int
		want string
	}{{2, ""}, {3, "2"}, {10, "2"}} {
		got := m.First("t1", "a", risks, t0.Add(time.Duration(c.at)*time.Hour))
		if got.GetId() != c.want {
			t.Errorf("first risk at +%dh: %q, want %q", c.at, got.GetId(), c.want)
		}
	}
	if got := m.First("t2", "a", risks, t0); got.GetId() != "4" {
		t.Errorf("t2: %q", got.GetId())
	}
}
