package intake

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
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

// countingJS counts the coalesced writes reaching a real JetStream, and the
// most in flight at once.
type countingJS struct {
	jetstream.JetStream
	writes, now, most atomic.Int32
}

func (c *countingJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	c.writes.Add(1)
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
	time.Sleep(5 * time.Millisecond) // a write that fsyncs
	return c.JetStream.PublishMsg(ctx, msg, opts...)
}

// TestCoalescedWritesInFlightAreBounded has 16 clients of one tenant send
// single-event requests one after another, a moment apart, through the
// coalescer: the bound of writes are in flight at once (requests keep
// arriving while a write is in flight), the requests share far fewer
// writes than there are requests, and every event is in the stream once
// each is answered.
func TestCoalescedWritesInFlightAreBounded(t *testing.T) {
	for _, inflight := range []int{1, 2} {
		t.Run(fmt.Sprint(inflight), func(t *testing.T) {
			bus := testutil.NATS(t)
			js := &countingJS{JetStream: bus.JS}
			c := newCoalescer(js, time.Millisecond, 5*time.Second, inflight)
			var wg sync.WaitGroup
			const clients, each = 16, 12
			const requests = clients * each
			for i := range clients {
				wg.Go(func() {
					for j := range each {
						time.Sleep(time.Duration(i%4) * time.Millisecond)
						ev := events.Event{TenantID: "t1", Type: events.TypeTrack, MessageID: fmt.Sprint("m-", i, "-", j), Name: "Report Built", UserID: "u1"}
						if err := c.publish(t.Context(), "t1", []events.Event{ev}); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			if most := js.most.Load(); most != int32(inflight) {
				t.Fatalf("%d writes in flight at once, the bound is %d", most, inflight)
			}
			if w := js.writes.Load(); w >= requests/2 {
				t.Fatalf("%d requests took %d writes: not coalesced", requests, w)
			}
			info, err := bus.JS.Stream(t.Context(), natsjs.EventsStream)
			if err != nil {
				t.Fatal(err)
			}
			var stored int
			for _, m := range msgs(t, info, int(info.CachedInfo().State.Msgs)) {
				evs, err := events.Decode(m)
				if err != nil {
					t.Fatal(err)
				}
				stored += len(evs)
			}
			if stored != requests {
				t.Fatalf("%d events in the stream, want %d", stored, requests)
			}
		})
	}
}

func msgs(t *testing.T, s jetstream.Stream, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for seq := uint64(1); len(out) < n; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		out = append(out, m.Data)
	}
	return out
}
