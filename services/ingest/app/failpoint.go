//go:build failpoints

package app

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// failpoint reads STICKPOINT_FAILPOINT=writer-exit-after-insert:N, which
// makes the writer exit right after its Nth successful insert, before the
// ack: the "insert succeeded, ack lost" crash of RELIABILITY.md's R5, made
// deterministic for the fault tests. Only binaries built with the
// failpoints tag have it (the fault tests build one); see failpoint_off.go.
func failpoint(log *slog.Logger) func() {
	spec, ok := strings.CutPrefix(os.Getenv("STICKPOINT_FAILPOINT"), "writer-exit-after-insert:")
	n, err := strconv.Atoi(spec)
	if !ok || err != nil || n < 1 {
		return nil
	}
	log.Warn("failpoint armed: the writer exits after an insert", "insert", n)
	var inserts atomic.Int64
	return func() {
		if inserts.Add(1) == int64(n) {
			os.Exit(75)
		}
	}
}
