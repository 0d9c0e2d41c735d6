//go:build !failpoints

package app

import "log/slog"

// failpoint is a no-op in shipped binaries: the fault tests' crash points
// exist only with the failpoints build tag (failpoint.go).
func failpoint(*slog.Logger) func() { return nil }
