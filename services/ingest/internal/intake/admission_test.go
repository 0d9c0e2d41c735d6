package intake

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestAdmissionBoundsBytesInFlight(t *testing.T) {
	in, err := New(nil, Config{MaxInflightBytes: 100, AdmitWait: 50 * time.Millisecond}, testutil.Logger(t))
	require.NoError(t, err)
	ctx := t.Context()

	a, err := in.Admit(ctx, "", 60)
	require.NoError(t, err)
	_, err = in.Admit(ctx, "", 60)
	require.ErrorIs(t, err, ErrOverloaded, "60 + 60 is over the budget of 100")

	a.Shrink(30) // the body turned out smaller than reserved
	b, err := in.Admit(ctx, "", 60)
	require.NoError(t, err, "30 + 60 fits")
	_, err = in.Admit(ctx, "", 20)
	require.ErrorIs(t, err, ErrOverloaded)

	a.Release()
	c, err := in.Admit(ctx, "", 20)
	require.NoError(t, err)
	b.Release()
	b.Release() // a second release gives nothing back twice
	_, err = in.Admit(ctx, "", 90)
	require.ErrorIs(t, err, ErrOverloaded, "20 held, 90 more is over")
	c.Release()

	// A request larger than the budget takes all of it, rather than never.
	whole, err := in.Admit(ctx, "", 1000)
	require.NoError(t, err)
	_, err = in.Admit(ctx, "", 1)
	require.ErrorIs(t, err, ErrOverloaded)
	whole.Release()

	// A client that leaves while waiting is not reported as overload.
	hold, err := in.Admit(ctx, "", 100)
	require.NoError(t, err)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err = in.Admit(gone, "", 10)
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
	hold.Release()
}

func TestAdmissionWakesAWaitingRequest(t *testing.T) {
	in, err := New(nil, Config{MaxInflightBytes: 100, AdmitWait: time.Minute}, testutil.Logger(t))
	require.NoError(t, err)
	held, err := in.Admit(t.Context(), "", 100)
	require.NoError(t, err)
	admitted := make(chan error, 1)
	go func() {
		r, err := in.Admit(t.Context(), "", 50)
		if err == nil {
			r.Release()
		}
		admitted <- err
	}()
	select {
	case err := <-admitted:
		t.Fatalf("admitted while the budget was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	held.Release()
	require.NoError(t, <-admitted, "room given back admits the waiting request")
}

// A tenant holds at most its share of the budget: its surge waits and is
// refused while another tenant's requests still get in.
func TestATenantHoldsOnlyItsShare(t *testing.T) {
	in, err := New(nil, Config{MaxInflightBytes: 100, AdmitWait: 50 * time.Millisecond, TenantInflightShare: 0.5}, testutil.Logger(t))
	require.NoError(t, err)
	ctx := t.Context()
	a1, err := in.Admit(ctx, "flood", 40)
	require.NoError(t, err)
	_, err = in.Admit(ctx, "flood", 20)
	require.ErrorIs(t, err, ErrOverloaded, "40 + 20 is over the flooding tenant's 50")
	b, err := in.Admit(ctx, "quiet", 50)
	require.NoError(t, err, "the other tenant gets in")
	a1.Shrink(10)
	a2, err := in.Admit(ctx, "flood", 20)
	require.NoError(t, err, "10 + 20 fits the share again")
	big, err := in.Admit(ctx, "flood", 10)
	require.NoError(t, err, "10 + 20 + 10 is 40: within 50")
	for _, r := range []*Reservation{a1, a2, b, big} {
		r.Release()
	}
	whole, err := in.Admit(ctx, "flood", 80)
	require.NoError(t, err, "a request over the share takes the whole share, rather than never")
	whole.Release()
}
