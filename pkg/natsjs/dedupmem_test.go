package natsjs_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// BenchmarkDedupWindowMemory measures the heap an embedded nats-server
// holds per Nats-Msg-Id in the EVENTS stream's duplicate window.
func BenchmarkDedupWindowMemory(b *testing.B) {
	n := 20000
	if os.Getenv("STICKPOINT_BENCH_DURATION") == "" {
		n = 200000
	}
	for _, withIDs := range []bool{false, true} {
		b.Run(fmt.Sprintf("ids=%t", withIDs), func(b *testing.B) {
			for range b.N {
				bus := testutil.NATS(b)
				heap := func() uint64 {
					runtime.GC()
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					return m.HeapAlloc
				}
				before := heap()
				for i := range n {
					var opts []jetstream.PublishOpt
					if withIDs {
						opts = append(opts, jetstream.WithMsgID(fmt.Sprintf("tenant-a:track:%032x", i)))
					}
					if _, err := bus.JS.Publish(b.Context(), natsjs.EventSubject("tenant-a", "track"), nil, opts...); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(100 * time.Millisecond)
				b.ReportMetric(float64(heap()-before)/float64(n), "heap-bytes/msg")
			}
		})
	}
}
