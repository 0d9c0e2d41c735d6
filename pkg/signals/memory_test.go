package signals

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
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
	add := func(sigs ...*signalsv1.Signal) {
		published := make([][]byte, len(sigs))
		for i, s := range sigs {
			var err error
			if published[i], err = proto.Marshal(s); err != nil {
				t.Fatal(err)
			}
		}
		m.add(sigs, published)
	}
	add(sig("1", "t1", "a", "health_red", 5), sig("2", "t1", "a", "onboarding_late", 3), sig("3", "t1", "a", "health_changed", 1))
	add(sig("2", "t1", "a", "onboarding_late", 3), sig("4", "t2", "a", "health_red", 0))
	kept, err := m.Signals("t1")
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 3 {
		t.Errorf("t1 has %d signals, want 3 (one per id)", len(kept))
	}
	var kinds []string // each signal as published
	for _, s := range kept {
		if s.GetTenantId() != "t1" || s.GetAccountId() != "a" {
			t.Errorf("kept %v", s)
		}
		kinds = append(kinds, s.GetId()+" "+s.GetKind())
	}
	if want := []string{"1 health_red", "2 onboarding_late", "3 health_changed"}; !slices.Equal(kinds, want) {
		t.Errorf("kept %q, want %q", kinds, want)
	}
	risks := []string{"health_red", "onboarding_late"}
	for _, c := range []struct {
		at   int
		want string
	}{{2, ""}, {3, "2"}, {10, "2"}} {
		got, err := m.First("t1", "a", risks, t0.Add(time.Duration(c.at)*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if got.GetId() != c.want || c.want != "" && (got.GetKind() != "onboarding_late" || !got.GetOccurredAt().AsTime().Equal(t0.Add(3*time.Hour))) {
			t.Errorf("first risk at +%dh: %q, want %q", c.at, got.GetId(), c.want)
		}
	}
	if got, err := m.First("t2", "a", risks, t0); err != nil || got.GetId() != "4" {
		t.Errorf("t2: %q", got.GetId())
	}
}
