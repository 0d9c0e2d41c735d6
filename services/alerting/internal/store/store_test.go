package store

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

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

// stores opens the bucket's store and a memory one over it, for tests
// that hold for both.
func stores(t *testing.T) map[string]*Store {
	bus := testutil.NATS(t)
	out := map[string]*Store{}
	for _, name := range []string{"bucket", "memory"} {
		s, err := Open(t.Context(), bus)
		if err != nil {
			t.Fatal(err)
		}
		if name == "memory" {
			s.UseMemory()
		}
		out[name] = s
	}
	return out
}

func record(tenant, id string, seen ...string) *lifecycle.Record {
	return &lifecycle.Record{Tenant: tenant, Alert: &alertsv1.Alert{Id: id, Revision: 1}, Seen: seen}
}

// The memory a backtest keeps its alerts in answers as the bucket does:
// reads, writes, and the listing by tenant.
func TestMemoryKeepsAlertsAsTheBucketDoes(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			for _, k := range [][2]string{{"acme", "a2"}, {"acme", "a1"}, {"acme2", "a1"}, {"beta", "b1"}} {
				if _, err := s.Update(ctx, k[0], k[1], func(cur *lifecycle.Record) (*lifecycle.Record, error) {
					if cur != nil {
						t.Fatalf("%s/%s: a new alert read as %v", k[0], k[1], cur)
					}
					return record(k[0], k[1], "s1"), nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Update(ctx, "acme", "a1", func(cur *lifecycle.Record) (*lifecycle.Record, error) {
				return record("acme", "a1", append(cur.Seen, "s2")...), nil
			}); err != nil {
				t.Fatal(err)
			}
			rec, err := s.Get(ctx, "acme", "a1")
			if err != nil || !slices.Equal(rec.Seen, []string{"s1", "s2"}) {
				t.Fatalf("acme/a1 after two changes: %+v, %v; want seen s1, s2", rec, err)
			}
			if _, err := s.Get(ctx, "acme", "nope"); err != ErrNotFound {
				t.Fatalf("a missing alert: %v; want ErrNotFound", err)
			}
			for tenant, want := range map[string][]string{"acme": {"acme/a1", "acme/a2"}, "": {"acme/a1", "acme/a2", "acme2/a1", "beta/b1"}} {
				var got []string
				if err := s.Each(ctx, tenant, func(r *lifecycle.Record) error {
					got = append(got, r.Tenant+"/"+r.Alert.GetId())
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("the alerts of tenant %q: %v; want %v", tenant, got, want)
				}
			}
		})
	}
}

// Changes made at once to one alert are each applied once: a write that
// lost the race reads again and retries, in memory as in the bucket.
func TestConcurrentChangesAreEachAppliedOnce(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			const writers, changes = 4, 10
			var g sync.WaitGroup
			for w := range writers {
				g.Go(func() {
					for c := range changes {
						tries := 0
						if _, err := s.Update(t.Context(), "acme", "a1", func(cur *lifecycle.Record) (*lifecycle.Record, error) {
							if tries++; tries == 1 {
								time.Sleep(time.Millisecond) // let another writer change it meanwhile
							}
							var seen []string
							if cur != nil {
								seen = cur.Seen
							}
							return record("acme", "a1", append(seen, fmt.Sprintf("%d/%d", w, c))...), nil
						}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			g.Wait()
			rec, err := s.Get(t.Context(), "acme", "a1")
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Seen) != writers*changes {
				t.Fatalf("%d changes applied; want %d", len(rec.Seen), writers*changes)
			}
		})
	}
}

// A backtest whose data folder is kept saves the alerts it kept in memory
// to the bucket, where `stickpoint alerts` reads them.
func TestSaveMemoryWritesTheAlertsToTheBucket(t *testing.T) {
	bus := testutil.NATS(t)
	mem, err := Open(t.Context(), bus)
	if err != nil {
		t.Fatal(err)
	}
	mem.UseMemory()
	for _, id := range []string{"a1", "a2"} {
		if _, err := mem.Update(t.Context(), "acme", id, func(*lifecycle.Record) (*lifecycle.Record, error) {
			return record("acme", id, "s-"+id), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	bucket, err := Open(t.Context(), bus)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Get(t.Context(), "acme", "a1"); err != ErrNotFound {
		t.Fatalf("an alert in memory is in the bucket before it is saved: %v", err)
	}
	if err := mem.SaveMemory(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a1", "a2"} {
		rec, err := bucket.Get(t.Context(), "acme", id)
		if err != nil || !slices.Equal(rec.Seen, []string{"s-" + id}) {
			t.Fatalf("acme/%s saved: %+v, %v", id, rec, err)
		}
	}
}
