package events

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// StoredNotice is the writer's notice of what one insert stored for a
// tenant, published after the insert and before the ack (DESIGN.md,
// "Detection"): the accounts whose events changed, and the span of those
// events' times. The detection services recompute those accounts from
// ClickHouse; the notice itself carries no data to count.
type StoredNotice struct {
	TenantID string    `json:"tenant_id"`
	Accounts []string  `json:"accounts"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
}

// StoredNotices groups stored events into one notice per tenant, listing
// the accounts sorted. Events without an account are left out.
func StoredNotices(evs []Event) []StoredNotice {
	byTenant := map[string]*StoredNotice{}
	seen := map[[2]string]bool{}
	var order []string
	for _, e := range evs {
		if e.AccountID == "" {
			continue
		}
		n := byTenant[e.TenantID]
		if n == nil {
			n = &StoredNotice{TenantID: e.TenantID, From: e.Timestamp, To: e.Timestamp}
			byTenant[e.TenantID] = n
			order = append(order, e.TenantID)
		}
		if key := [2]string{e.TenantID, e.AccountID}; !seen[key] {
			seen[key] = true
			n.Accounts = append(n.Accounts, e.AccountID)
		}
		if e.Timestamp.Before(n.From) {
			n.From = e.Timestamp
		}
		if e.Timestamp.After(n.To) {
			n.To = e.Timestamp
		}
	}
	out := make([]StoredNotice, 0, len(order))
	for _, t := range order {
		n := byTenant[t]
		slices.Sort(n.Accounts)
		out = append(out, *n)
	}
	return out
}

// DecodeStoredNotice reads a notice.
func DecodeStoredNotice(b []byte) (StoredNotice, error) {
	var n StoredNotice
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("stored notice: %w", err)
	}
	return n, nil
}
