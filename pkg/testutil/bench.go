package testutil

import (
	"os"
	"slices"
	"testing"
	"time"
)

// BenchDuration is a benchmark phase's length: STICKPOINT_BENCH_DURATION
// when set (make bench-smoke uses 1s), else def.
func BenchDuration(def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("STICKPOINT_BENCH_DURATION")); err == nil {
		return d
	}
	return def
}

// ReportLatencies reports a set of probe latencies as name-p50-ms and
// name-p99-ms, and logs them with their count and maximum. It sorts lat.
func ReportLatencies(b *testing.B, name string, lat []time.Duration) {
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, name+"-p99-ms")
	b.Logf("%s: %d probes, p50 %s, p99 %s, max %s", name, len(lat), p(0.5), p(0.99), lat[len(lat)-1])
}
