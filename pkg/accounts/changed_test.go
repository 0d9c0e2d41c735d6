package accounts_test

import (
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

// A Changed message reaches every listener, in chunks a big sweep can
// send; a reconnect, which may have lost messages, is reported once.
func TestChangedReachesListenersAndLossIsReported(t *testing.T) {
	bus := testutil.NATS(t)
	got := make(chan accounts.Changed, 10)
	l, err := accounts.Listen(bus.NC, func(c accounts.Changed) { got <- c })
	if err != nil {
		t.Fatal(err)
	}
	n := accounts.NewNotifier(bus.NC)
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = "acct"
	}
	if err := n.Changed("t1", ids); err != nil {
		t.Fatal(err)
	}
	var total int
	for _, want := range []int{1000, 1000, 500} {
		select {
		case c := <-got:
			if c.Tenant != "t1" || len(c.Accounts) != want || c.Origin != n.Origin() {
				t.Fatalf("got %s: %d accounts from %q, want t1: %d from %q", c.Tenant, len(c.Accounts), c.Origin, want, n.Origin())
			}
			total += len(c.Accounts)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of 2500 accounts", total)
		}
	}
	if l.Lost() {
		t.Fatal("nothing was lost yet")
	}
	if err := bus.NC.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); bus.NC.Stats().Reconnects == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect")
		}
	}
	if !l.Lost() {
		t.Error("a reconnect was not reported")
	}
	if l.Lost() {
		t.Error("the same reconnect was reported twice")
	}
	if err := (*accounts.Notifier)(nil).Changed("t1", ids); err != nil {
		t.Errorf("a nil notifier tells no one, without error: %v", err)
	}
}
