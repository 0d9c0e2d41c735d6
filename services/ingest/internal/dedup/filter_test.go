package dedup

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFilterHasWhatWasAdded(t *testing.T) {
	f := NewFilter()
	rng := rand.New(rand.NewPCG(1, 2))
	added := make([]uint64, 200_000)
	for i := range added {
		added[i] = rng.Uint64()
		f.Add(added[i], 100)
	}
	require.Equal(t, len(added), f.Len())
	for _, h := range added {
		require.True(t, f.Has(h), "no false miss")
	}
	falseHits := 0
	for range 200_000 {
		if f.Has(rng.Uint64()) {
			falseHits++
		}
	}
	require.Zero(t, falseHits, "48-bit fingerprints: a false hit among 200k lookups would be a one-in-10^4 event")
	require.LessOrEqual(t, f.Bytes()/f.Len(), 21, "bytes per entry")
}

func TestFilterExpiresByHour(t *testing.T) {
	f := NewFilter()
	for i := range 9500 {
		f.Add(Hash("t", "old-"+strconv.Itoa(i)), 65530) // just before the 16-bit stamp wraps
	}
	for i := range 500 {
		f.Add(Hash("t", "new-"+strconv.Itoa(i)), 65536+3)
	}
	f.Add(Hash("t", "new-0"), 65536+3) // adding again does not count twice
	require.Equal(t, 10000, f.Len())
	require.Equal(t, 16384, len(f.slots))
	f.Expire(65536 + 1)
	require.Equal(t, 500, f.Len())
	require.False(t, f.Has(Hash("t", "old-7")))
	require.True(t, f.Has(Hash("t", "new-7")))
	require.Equal(t, 1024, len(f.slots), "the table shrinks back")
	f.Add(Hash("t", "old-7"), 65536+5)
	require.True(t, f.Has(Hash("t", "old-7")))
}

func TestHashSeparatesTenantFromMessageID(t *testing.T) {
	require.NotEqual(t, Hash("ab", "c"), Hash("a", "bc"))
	require.NotEqual(t, Hash("acme", "m1"), Hash("globex", "m1"))
	require.Equal(t, Hash("acme", "m1"), Hash("acme", "m1"))
}

// BenchmarkFilter measures a lookup and an add, and the memory per entry,
// at 1M entries.
func BenchmarkFilter(b *testing.B) {
	f := NewFilter()
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1_000_000 {
		f.Add(rng.Uint64(), 1)
	}
	b.ResetTimer()
	for i := range b.N {
		h := rng.Uint64()
		if !f.Has(h) {
			f.Add(h, uint32(i>>20))
		}
	}
	b.ReportMetric(float64(f.Bytes())/float64(f.Len()), "bytes/entry")
}
