package journeys

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

func file(id, event string) []byte {
	return []byte(fmt.Sprintf("id: %s\nmilestones: [{id: m, event: %s, target: 1d}]\n", id, event))
}

func TestVersionsOrderAndDelete(t *testing.T) {
	s, err := Open(t.Context(), testutil.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, unchanged, err := s.Put(ctx, "t1", file("b", "E"))
	if err != nil || unchanged || st.Version != 1 {
		t.Fatalf("first put: %+v %v %v", st, unchanged, err)
	}
	if st, unchanged, _ = s.Put(ctx, "t1", file("b", "E")); !unchanged || st.Version != 1 {
		t.Fatalf("same source: %+v %v", st, unchanged)
	}
	if st, _, _ = s.Put(ctx, "t1", file("b", "F")); st.Version != 2 || st.Journey.Milestones[0].Event != "F" {
		t.Fatalf("second version: %+v", st)
	}
	if _, _, err := s.Put(ctx, "t1", file("a", "E")); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx, "t1")
	if err != nil || len(list) != 2 || list[0].ID != "b" || list[1].ID != "a" {
		t.Fatalf("list is in creation order: %+v %v", list, err)
	}
	if other, _ := s.List(ctx, "t2"); len(other) != 0 {
		t.Fatalf("t2 sees %d journeys", len(other))
	}
	var bad *specfile.Error
	if _, _, err := s.Put(ctx, "t1", []byte("id: x\n")); !errors.As(err, &bad) {
		t.Fatalf("bad file: %v", err)
	}
	if err := s.Delete(ctx, "t1", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "t1", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if err := s.Delete(ctx, "t1", "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestConcurrentPutsGetDistinctVersions(t *testing.T) {
	s, err := Open(t.Context(), testutil.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	versions := make(chan int64, 8)
	for i := range 4 {
		wg.Go(func() {
			st, _, err := s.Put(t.Context(), "t1", file("j", fmt.Sprintf("E%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			versions <- st.Version
		})
	}
	wg.Wait()
	close(versions)
	seen := map[int64]bool{}
	for v := range versions {
		if seen[v] {
			t.Fatalf("version %d given twice", v)
		}
		seen[v] = true
	}
	if len(seen) != 4 {
		t.Fatalf("versions %v", seen)
	}
}

func TestAtMostMaxPerTenant(t *testing.T) {
	s, err := Open(t.Context(), testutil.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxPerTenant {
		if _, _, err := s.Put(t.Context(), "t1", file(fmt.Sprintf("j%d", i), "E")); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Put(t.Context(), "t1", file("one-more", "E")); !errors.Is(err, ErrTooMany) {
		t.Fatalf("past the limit: %v", err)
	}
}
