package demo

import (
	"testing"
	"time"
)

func TestGenerateMakesTheDemoBase(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b := Generate(now, 1)
	if len(b.Accounts) != 200 {
		t.Fatalf("%d accounts", len(b.Accounts))
	}
	groups, byProfile := 0, map[string]int{}
	for _, a := range b.Accounts {
		byProfile[a.Profile]++
	}
	events := map[string]map[string]int{} // account -> event -> n
	prev, account := time.Time{}, ""
	for i, c := range b.Calls {
		if c.Traits != nil {
			if i != groups {
				t.Fatalf("call %d is a group after an event", i)
			}
			groups++
			continue
		}
		if c.At.After(now) || c.At.Before(now.AddDate(0, 0, -61)) {
			t.Fatalf("call %d at %s: outside the 60 days before %s", i, c.At, now)
		}
		if c.Account != account {
			if events[c.Account] != nil {
				t.Fatalf("call %d: %s's events are not together", i, c.Account)
			}
			account, prev = c.Account, time.Time{}
		}
		if c.At.Before(prev) {
			t.Fatalf("call %d is older than the one before it of its account", i)
		}
		prev = c.At
		if events[c.Account] == nil {
			events[c.Account] = map[string]int{}
		}
		name := c.Event
		if c.Path != "" {
			name = "page:" + c.Path
		}
		events[c.Account][name]++
	}
	if groups != 200 || byProfile[Healthy] < 100 || byProfile[Stalled] == 0 || byProfile[Churned] == 0 || byProfile[Expansion] == 0 {
		t.Fatalf("groups %d, profiles %v", groups, byProfile)
	}
	for _, a := range b.Accounts {
		ev := events[a.ID]
		switch a.Profile {
		case Requested:
			if ev["Cancellation Requested"] != 1 || ev["page:/settings/billing"] < 2 {
				t.Errorf("%s (%s): %v", a.ID, a.Profile, ev)
			}
		case Churned:
			if ev["Subscription Cancelled"] != 1 {
				t.Errorf("%s (%s): %v", a.ID, a.Profile, ev)
			}
		case Stalled:
			if ev["Report Viewed"] != 0 || ev["Source Connected"] != 1 {
				t.Errorf("%s (%s): %v", a.ID, a.Profile, ev)
			}
		case Healthy, Expansion:
			if ev["Cancellation Requested"]+ev["Subscription Cancelled"]+ev["page:/settings/billing"] != 0 || ev["Report Viewed"] < 10 {
				t.Errorf("%s (%s): %v", a.ID, a.Profile, ev)
			}
		}
	}
	if again := Generate(now, 1); len(again.Calls) != len(b.Calls) || again.Calls[500].At != b.Calls[500].At {
		t.Fatal("the same seed and clock made another base")
	}
}
