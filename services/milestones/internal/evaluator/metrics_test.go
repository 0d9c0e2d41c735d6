package evaluator

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// The signals metric counts each signal emitted once, by tenant and kind,
// though emit adds it once per kind.
func TestSignalsAreCountedByKind(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		reader := sdkmetric.NewManualReader()
		prev := otel.GetMeterProvider()
		otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
		t.Cleanup(func() { otel.SetMeterProvider(prev) })
		e := newEnv(t, db) // its evaluator's instruments come from the provider above
		e.put("t1", "id: j\nmilestones:\n  - {id: one, event: A, target: 10d}\n  - {id: two, event: B, target: 20d}\n")
		start := now0.Add(-days(5))
		for _, acc := range []string{"a1", "a2", "a3"} {
			e.group("t1", acc, start, map[string]any{"created_at": start.Format(time.RFC3339)})
			e.insert(event{tenant: "t1", account: acc, user: "u", name: "A", at: start.Add(days(1))})
		}
		e.insert(event{tenant: "t1", account: "a1", user: "u", name: "B", at: start.Add(days(2))})
		e.evaluate("t1", "a1", "a2", "a3")

		want := map[string]int64{}
		for _, s := range e.signals("t1") { // "account kind milestone"
			want[strings.Fields(s)[1]]++
		}
		if want["milestone_reached"] != 4 || want["onboarding_completed"] != 1 {
			t.Fatalf("signals by kind %v, want 4 milestone_reached and 1 onboarding_completed", want)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(t.Context(), &rm); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "stickpoint.milestones.signals" {
					continue
				}
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					tenant, _ := dp.Attributes.Value("tenant")
					kind, _ := dp.Attributes.Value("kind")
					if tenant.AsString() == "t1" {
						got[kind.AsString()] += dp.Value
					}
				}
			}
		}
		if len(got) != len(want) {
			t.Fatalf("metric by kind %v, want %v", got, want)
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("metric by kind %v, want %v", got, want)
			}
		}
	})
}
