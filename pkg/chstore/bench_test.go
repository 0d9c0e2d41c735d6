package chstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// BenchmarkInsert measures batch inserts of event-shaped rows on each engine.
func BenchmarkInsert(b *testing.B) {
	for _, engine := range testutil.Engines {
		b.Run(engine, func(b *testing.B) {
			s := testutil.Store(b, engine)
			if err := s.Exec(b.Context(), eventsDDL); err != nil {
				b.Fatal(err)
			}
			const batch = 10000
			rows := make([][]any, batch)
			ts := time.Now().UTC()
			for i := range rows {
				rows[i] = []any{"acme", fmt.Sprintf("m%d", i), int64(i), uint64(i), 0.5, uint8(1), ts, []string{"a"}, "note"}
			}
			b.ResetTimer()
			for range b.N {
				if err := s.Insert(b.Context(), "events", eventCols, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
