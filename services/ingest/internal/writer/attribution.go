package writer

import (
	"context"
	"slices"
	"time"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
)

// Attribute is the attribution rule (DOMAIN.md, "Attribution"): the
// account of an event that names none (no groupId, no context.groupId) is
// its user's account at the event's time: the account of the user's latest
// group call at or before it, or, for an event sent before its user's first
// group call reached us, the account of the earliest one. members are the
// user's memberships sorted by time; none leaves the event unattributed.
//
// It depends only on the event and the group calls stored, never on which
// writer runs it or what that writer saw before, so every replica and a
// restarted one give the same answer for the same stored calls.
func Attribute(members []store.Membership, at time.Time) string {
	if len(members) == 0 {
		return ""
	}
	i, _ := slices.BinarySearchFunc(members, at, func(m store.Membership, t time.Time) int {
		return m.Since.Compare(t)
	})
	// members[:i] started before at; members[i] may start exactly at it.
	for i < len(members) && !members[i].Since.After(at) {
		i++
	}
	if i == 0 {
		return members[0].AccountID
	}
	return members[i-1].AccountID
}

// addMember inserts m into a user's memberships, kept sorted by time, ties
// by account so the order never depends on arrival.
func addMember(ms []store.Membership, m store.Membership) []store.Membership {
	i, found := slices.BinarySearchFunc(ms, m, compareMembers)
	if found {
		return ms
	}
	return slices.Insert(ms, i, m)
}

func compareMembers(a, b store.Membership) int {
	if c := a.Since.Compare(b.Since); c != 0 {
		return c
	}
	switch {
	case a.AccountID < b.AccountID:
		return -1
	case a.AccountID > b.AccountID:
		return 1
	}
	return 0
}

// membershipOf is the membership an event records, if any: group calls, and
// identify calls that name an account. (Other calls naming
// context.groupId set their own account only: recording every one would
// write a row per event.)
func membershipOf(e *events.Event) (store.Membership, bool) {
	if e.UserID == "" || e.AccountID == "" || (e.Type != events.TypeGroup && e.Type != events.TypeIdentify) {
		return store.Membership{}, false
	}
	return store.Membership{AccountID: e.AccountID, Since: e.Timestamp.UTC().Truncate(time.Second)}, true
}

// attribute sets the account of the new events that lack one. It first
// makes sure the cache holds every stored membership of the users
// involved, then adds the batch's own group calls, so the rule sees the
// same calls whatever the batching.
func (w *Writer) attribute(ctx context.Context, part *partition, fresh []*candidate) error {
	if len(part.members) > maxCachedUsers {
		clear(part.members)
	}
	missing := map[string][]string{} // tenant -> users not cached
	asked := map[string]bool{}
	need := func(e *events.Event) {
		key := e.TenantID + "\x00" + e.UserID
		if _, cached := part.members[key]; e.UserID == "" || cached || asked[key] {
			return
		}
		asked[key] = true
		missing[e.TenantID] = append(missing[e.TenantID], e.UserID)
	}
	for _, c := range fresh {
		if _, ok := membershipOf(&c.ev); ok || c.ev.AccountID == "" {
			need(&c.ev)
		}
	}
	for tenant, users := range missing {
		found, err := w.store.Memberships(ctx, tenant, users)
		if err != nil {
			return err
		}
		for _, u := range users {
			ms := found[u]
			slices.SortFunc(ms, compareMembers)
			part.members[tenant+"\x00"+u] = slices.CompactFunc(ms, func(a, b store.Membership) bool { return compareMembers(a, b) == 0 })
		}
	}
	for _, c := range fresh {
		if m, ok := membershipOf(&c.ev); ok {
			key := c.ev.TenantID + "\x00" + c.ev.UserID
			part.members[key] = addMember(part.members[key], m)
		}
	}
	for _, c := range fresh {
		if c.ev.AccountID == "" && c.ev.UserID != "" {
			c.ev.AccountID = Attribute(part.members[c.ev.TenantID+"\x00"+c.ev.UserID], c.ev.Timestamp.UTC().Truncate(time.Second))
		}
	}
	return nil
}
