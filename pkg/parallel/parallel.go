// Package parallel spreads independent, CPU-bound work over the cores.
package parallel

import (
	"runtime"
	"sync"
)

// Accounts is the fewest calls a goroutine is started for when each call
// evaluates or scores one account: a round of a handful of accounts is
// done sooner on one.
const Accounts = 64

// For calls f(i) for each i in [0, n), on up to GOMAXPROCS goroutines that
// each take a contiguous range of at least least calls, and returns when
// every call has. f must be safe to call at once for different i. Callers
// keep each result at its index, so what they gather after is the same
// whatever order the calls ran in.
func For(n, least int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/max(least, 1))
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
