// Package parallel spreads independent, CPU-bound work over the cores.
package parallel

import (
	"runtime"
	"sync"
)

// minPerWorker is the least work a goroutine is started for: a round of a
// handful of accounts is done sooner on one.
const minPerWorker = 64

// For calls f(i) for each i in [0, n), on up to GOMAXPROCS goroutines that
// each take a contiguous range, and returns when every call has. f must be
// safe to call at once for different i. Callers keep each result at its
// index, so what they gather after is the same whatever order the calls
// ran in.
func For(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/minPerWorker)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				f(i)
			}
		})
	}
	wg.Wait()
}
