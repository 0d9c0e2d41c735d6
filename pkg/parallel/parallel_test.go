package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Every index is called once, however n divides among the goroutines.
func TestForCallsEachIndexOnce(t *testing.T) {
	for _, least := range []int{0, 1, 3, Accounts} {
		for _, n := range []int{0, 1, 2, 3, 63, 64, 65, 127, 128, 129, 1000, 4097} {
			calls := make([]atomic.Int32, n)
			For(n, least, func(i int) { calls[i].Add(1) })
			for i := range calls {
				if c := calls[i].Load(); c != 1 {
					t.Fatalf("n=%d, least %d: index %d called %d times", n, least, i, c)
				}
			}
		}
	}
}

// Enough work runs on more than one goroutine: the first call of each
// range waits until two are running.
func TestForRunsAtOnce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	var running, most atomic.Int32
	release := make(chan struct{})
	go func() {
		for most.Load() < 2 {
			runtime.Gosched()
		}
		close(release)
	}()
	For(2*Accounts, Accounts, func(i int) {
		if i%Accounts != 0 {
			return
		}
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		select {
		case <-release:
		case <-time.After(5 * time.Second): // one at a time: it never comes
		}
		running.Add(-1)
	})
	if most.Load() < 2 {
		t.Errorf("at most %d calls ran at once", most.Load())
	}
}
