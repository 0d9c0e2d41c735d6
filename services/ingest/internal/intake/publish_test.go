package intake

import (
	"slices"
	"testing"

	"github.com/stickpoint/stickpoint/pkg/events"
)

func TestPublishOrderCoversEveryTypeGroupFirst(t *testing.T) {
	got := slices.Clone(publishOrder)
	want := slices.Clone(events.Types)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("publishOrder %v must hold each of %v once", publishOrder, events.Types)
	}
	if slices.Index(publishOrder, events.TypeGroup) > slices.Index(publishOrder, events.TypeTrack) {
		t.Fatal("group calls must be published before tracks")
	}
}
