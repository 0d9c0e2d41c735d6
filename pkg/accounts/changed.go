package accounts

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
)

// ChangedPrefix starts the core NATS subjects (no stream keeps them) on
// which the services that store what the accounts API reads (health
// scoring its rows, milestone tracking its onboarding state) say which
// accounts they just changed: "accounts.changed.<tenant>". Every replica
// serving the accounts API listens and drops what it holds of them, so
// its copy in memory never outlives the stored truth by more than the
// message's trip.
const ChangedPrefix = "accounts.changed."

// changedChunk caps the accounts per message, so a sweep of a big
// tenant stays far below NATS's payload limit.
const changedChunk = 1000

// Changed is one message: accounts of a tenant stored anew by Origin.
type Changed struct {
	Tenant   string   `json:"tenant"`
	Accounts []string `json:"accounts"`
	// Origin is the Notifier that sent it: a replica that updates its own
	// copy as it stores skips its own messages.
	Origin string `json:"origin"`
}

// Notifier publishes Changed messages for one writer.
type Notifier struct {
	nc     *nats.Conn
	origin string
}

// NewNotifier publishes on nc (nil publishes nothing: a backtest, or a
// test without a bus) under an origin of its own.
func NewNotifier(nc *nats.Conn) *Notifier {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Notifier{nc: nc, origin: hex.EncodeToString(b)}
}

// Origin is the id this notifier's messages carry.
func (n *Notifier) Origin() string {
	if n == nil {
		return ""
	}
	return n.origin
}

// Changed says ids of tenant were stored anew. It is best effort, as core
// NATS is: a listener that may have missed a message (a reconnect, a slow
// subscription) drops its whole copy instead (see Listener).
func (n *Notifier) Changed(tenant string, ids []string) error {
	if n == nil || n.nc == nil || len(ids) == 0 {
		return nil
	}
	for chunk := range slices.Chunk(ids, changedChunk) {
		data, err := json.Marshal(Changed{Tenant: tenant, Accounts: chunk, Origin: n.origin})
		if err != nil {
			return err
		}
		if err := n.nc.Publish(ChangedPrefix+tenant, data); err != nil {
			return fmt.Errorf("publish accounts changed: %w", err)
		}
	}
	return nil
}

// Listener receives every tenant's Changed messages.
type Listener struct {
	nc  *nats.Conn
	sub *nats.Subscription
	// seen is the reconnects and drops counted when Lost last answered.
	reconnects uint64
	dropped    int
}

// Listen calls f with each Changed message, on the subscription's own
// goroutine. Messages it can't read are skipped: they come from a newer
// writer, and a later message or Lost covers them.
func Listen(nc *nats.Conn, f func(Changed)) (*Listener, error) {
	sub, err := nc.Subscribe(ChangedPrefix+"*", func(m *nats.Msg) {
		var c Changed
		if json.Unmarshal(m.Data, &c) == nil {
			f(c)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listen for changed accounts: %w", err)
	}
	// A listener that falls behind drops messages; let it queue plenty first.
	if err := sub.SetPendingLimits(1<<20, 256<<20); err != nil {
		return nil, err
	}
	return &Listener{nc: nc, sub: sub, reconnects: nc.Stats().Reconnects}, nil
}

// Lost reports whether messages may have been missed since it last
// answered: the connection reconnected, or the subscription dropped some.
// The caller then forgets what it holds. Not safe for concurrent use.
func (l *Listener) Lost() bool {
	r := l.nc.Stats().Reconnects
	d, err := l.sub.Dropped()
	lost := r != l.reconnects || d != l.dropped || err != nil
	l.reconnects, l.dropped = r, d
	return lost
}
