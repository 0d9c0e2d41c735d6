package chstore_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// chdb_connect installs ClickHouse's own signal handlers, SIGSEGV included.
// Unless the store puts Go's back, a nil dereference after opening the
// embedded engine kills the process instead of panicking recoverably, and
// this test binary dies rather than fails.
func TestGoPanicsStayRecoverableWithEmbeddedEngine(t *testing.T) {
	s := testutil.Store(t, chstore.EngineEmbedded)
	require.NoError(t, s.Exec(t.Context(), "SELECT 1"))

	recovered := func() (r any) {
		defer func() { r = recover() }()
		var p *struct{ n int }
		return p.n // SIGSEGV, turned into a runtime panic by Go's handler
	}()
	require.NotNil(t, recovered, "nil dereference must be a recoverable panic")
	require.Contains(t, recovered.(error).Error(), "nil pointer dereference")

	// And the engine still answers afterwards.
	r, err := s.Query(t.Context(), "SELECT 41 + 1")
	require.NoError(t, err)
	require.True(t, r.Next())
	var n uint64
	require.NoError(t, r.Scan(&n))
	require.Equal(t, uint64(42), n)
}
