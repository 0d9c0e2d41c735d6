// Package demo makes the customer base of `make demo`: 200 accounts over
// 60 days of product use, with historical timestamps, in the shapes a CSM
// meets. Most onboard well; some stall; some show intent to cancel, and a
// few ask to; a few churn; a few are ready to expand. It is deterministic
// for a seed and a clock, so its tests can assert what it makes.
package demo

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"time"
)

// Profiles of accounts.
const (
	Healthy   = "healthy"
	Expansion = "expansion"
	Stalled   = "stalled"
	Late      = "late"
	Intent    = "intent"
	Requested = "requested" // cancel intent, then a cancellation request
	Churned   = "churned"
)

// Mix is how many accounts of each profile the demo makes: 200 in all.
var Mix = []struct {
	Profile string
	N       int
}{{Healthy, 118}, {Expansion, 8}, {Stalled, 30}, {Late, 10}, {Intent, 14}, {Requested, 6}, {Churned, 14}}

// Account is one customer account.
type Account struct {
	ID, Name, Plan, CSM, Industry, Profile string
	Created                                time.Time
	Seats, Employees                       int
	Users                                  []string
}

// Call is one Segment call to send: a group (Traits set), a track (Event
// set) or a page (Path set).
type Call struct {
	Account, User string
	At            time.Time
	Event         string
	Properties    map[string]any
	Path          string
	Traits        map[string]any
}

// Base is the generated customer base.
type Base struct {
	Accounts []Account
	// Calls are the groups first, so that an account's traits (owner,
	// plan, seats) are known before its events; then each account's
	// events, oldest first, one account after another (see Generate).
	Calls []Call
}

var (
	csms       = []string{"ana@stickpoint.dev", "raj@stickpoint.dev", "mei@stickpoint.dev", "tom@stickpoint.dev"}
	industries = []string{"software", "agency", "retail", "finance", "education"}
	words      = []string{"Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne", "Soylent",
		"Aperture", "Gringotts", "Oscorp", "Nakatomi", "Monarch", "Pied Piper", "Dunder", "Sterling"}
	suffixes = []string{"Labs", "Co", "Group", "Systems", "Works", "Analytics", "Partners", "Digital", "Studio", "Cloud"}
)

// Generate makes the base: 60 days of history up to now.
//
// An account's whole history comes together, not interleaved with the
// others by time: scored halfway through (its old weeks in, its recent
// ones not yet), any account would look as if its usage had just
// stopped, and signal intent to cancel until the rest arrived.
func Generate(now time.Time, seed uint64) Base {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	var b Base
	var events []Call
	i := 0
	for _, m := range Mix {
		for range m.N {
			a := newAccount(r, i, m.Profile, now)
			b.Accounts = append(b.Accounts, a)
			traits := map[string]any{"name": a.Name, "plan": a.Plan, "csm_email": a.CSM, "seats": a.Seats, "employees": a.Employees,
				"industry": a.Industry, "created_at": a.Created.Format(time.RFC3339)}
			b.Calls = append(b.Calls, Call{Account: a.ID, User: a.Users[0], At: a.Created, Traits: traits})
			h := history(r, a, now)
			sort.SliceStable(h, func(x, y int) bool { return h[x].At.Before(h[y].At) })
			events = append(events, h...)
			i++
		}
	}
	b.Calls = append(b.Calls, events...)
	return b
}

func newAccount(r *rand.Rand, i int, profile string, now time.Time) Account {
	name := fmt.Sprintf("%s %s", words[i%len(words)], suffixes[(i/len(words))%len(suffixes)])
	a := Account{ID: fmt.Sprintf("acct-%03d", i+1), Name: name, Profile: profile, CSM: csms[i%len(csms)], Industry: industries[r.IntN(len(industries))],
		Plan: []string{"pro", "pro", "team", "starter"}[r.IntN(4)], Employees: 10 + r.IntN(200)}
	age := 25 + r.IntN(35) // days
	users := 4 + r.IntN(5)
	a.Seats = users + 2 + r.IntN(8)
	switch profile {
	case Expansion:
		age, users = 24+r.IntN(5), 5+r.IntN(3)
		a.Seats, a.Plan = users, "team"
	case Stalled:
		age = 14 + r.IntN(30)
		if i%6 == 0 {
			a.Plan = "starter" // a stall the demo's rule doesn't alert on
		} else if a.Plan == "starter" {
			a.Plan = "pro"
		}
	case Late:
		age, a.Plan = 4, "pro"
	case Intent, Requested, Churned:
		age = 40 + r.IntN(20)
	}
	if profile != Stalled && profile != Late && a.Plan == "starter" {
		a.Plan = "pro"
	}
	a.Created = day(now, age).Add(time.Duration(9+r.IntN(8)) * time.Hour)
	for u := range users {
		a.Users = append(a.Users, fmt.Sprintf("%s-u%d", a.ID, u+1))
	}
	return a
}

// day is midnight UTC n days before now's day.
func day(now time.Time, n int) time.Time {
	return now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -n)
}

// history is an account's events.
func history(r *rand.Rand, a Account, now time.Time) []Call {
	var out []Call
	at := func(d time.Time, hour int) time.Time {
		t := d.Add(time.Duration(hour)*time.Hour + time.Duration(r.IntN(3600))*time.Second)
		if t.After(now) {
			t = now.Add(-time.Duration(1+r.IntN(600)) * time.Second)
		}
		return t
	}
	track := func(user, event string, t time.Time, props map[string]any) {
		out = append(out, Call{Account: a.ID, User: user, At: t, Event: event, Properties: props})
	}
	start := a.Created.Truncate(24 * time.Hour)
	days := int(now.Sub(start).Hours()/24) + 1
	admin := a.Users[0]

	// Onboarding: a good account reaches every milestone of the demo
	// journey (the journey template) on time; a stalled one only connects
	// its data; a late one has done nothing yet.
	switch a.Profile {
	case Late:
		track(admin, "Logged In", at(start, 1), nil)
		return out
	case Stalled:
		track(admin, "Source Connected", at(start, 2), nil)
		track(admin, "Logged In", at(start, 2), nil)
		if r.IntN(2) == 0 {
			track(admin, "Report Built", at(start.AddDate(0, 0, 1), 3), map[string]any{"kind": "chart"})
		}
		return out
	}
	track(admin, "Source Connected", at(start, 1), nil)
	track(admin, "Report Built", at(start.AddDate(0, 0, 1), 2), map[string]any{"kind": "chart"})
	track(a.Users[1], "Report Built", at(start.AddDate(0, 0, 2), 3), map[string]any{"kind": "table"})

	// Daily use: each user, most weekdays, logs in, views reports and now
	// and then uses a key feature.
	quietFrom := days + 1 // the day use stops (declining accounts)
	switch a.Profile {
	case Intent, Requested:
		quietFrom = days - 9
	case Churned:
		quietFrom = days - 16
	}
	for d := 1; d < days; d++ {
		date := start.AddDate(0, 0, d)
		if date.Weekday() == time.Saturday || date.Weekday() == time.Sunday {
			continue
		}
		active := a.Users
		if d >= quietFrom {
			active = a.Users[:1] // one user left, now and then
			if r.IntN(3) != 0 {
				continue
			}
		}
		for _, u := range active {
			if a.Profile != Expansion && r.IntN(5) == 0 {
				continue
			}
			track(u, "Logged In", at(date, 1+r.IntN(3)), nil)
			track(u, "Report Viewed", at(date, 4), nil)
			if d >= days-7 && a.Profile == Expansion {
				track(u, "Report Viewed", at(date, 6), nil) // growing
			}
			switch r.IntN(6) {
			case 0:
				track(u, "Report Built", at(date, 5), map[string]any{"kind": "chart"})
			case 1:
				track(u, "Dashboard Shared", at(date, 6), nil)
			case 2:
				track(u, "Alert Created", at(date, 7), nil)
			}
		}
	}

	// Intent to cancel, in the last days: the billing page, a bulk export,
	// seats removed; then, for some, a request to cancel or the churn.
	switch a.Profile {
	case Intent, Requested:
		last := day(now, 0)
		for k := range 2 + r.IntN(3) {
			out = append(out, Call{Account: a.ID, User: admin, At: at(last.AddDate(0, 0, -6+k), 3), Path: "/settings/billing"})
		}
		track(admin, "Data Exported", at(last.AddDate(0, 0, -4), 4), map[string]any{"rows": 50000 + r.IntN(100000)})
		track(admin, "Seats Removed", at(last.AddDate(0, 0, -3), 5), map[string]any{"count": 2})
		if a.Profile == Requested {
			track(admin, "Cancellation Requested", at(last.AddDate(0, 0, -1), 2), map[string]any{"reason": []string{"too expensive", "missing integrations", "switching to a competitor"}[r.IntN(3)]})
		}
	case Churned:
		gone := day(now, 16)
		for k := range 3 {
			out = append(out, Call{Account: a.ID, User: admin, At: at(gone.AddDate(0, 0, -8+k), 3), Path: "/settings/billing"})
		}
		track(admin, "Data Exported", at(gone.AddDate(0, 0, -5), 4), map[string]any{"rows": 80000})
		track(admin, "Subscription Cancelled", at(gone.AddDate(0, 0, 3+r.IntN(8)), 2), map[string]any{"reason": []string{"too expensive", "no adoption", "company closed"}[r.IntN(3)]})
	}
	return out
}

// WriteHistory writes the base as a history file: one Segment call per
// line with its timestamp and a messageId, the format `stickpoint send`
// and `stickpoint backtest` read. The calls are in the order Calls holds.
func (b Base) WriteHistory(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i, c := range b.Calls {
		call := map[string]any{"userId": c.User, "timestamp": c.At.UTC().Format(time.RFC3339Nano), "messageId": fmt.Sprintf("demo-%d", i+1)}
		switch {
		case c.Traits != nil:
			call["type"], call["groupId"], call["traits"] = "group", c.Account, c.Traits
		case c.Path != "":
			call["type"], call["name"] = "page", "Billing"
			call["properties"] = map[string]any{"path": c.Path}
			call["context"] = map[string]any{"groupId": c.Account}
		default:
			call["type"], call["event"] = "track", c.Event
			if c.Properties != nil {
				call["properties"] = c.Properties
			}
			call["context"] = map[string]any{"groupId": c.Account}
		}
		if err := enc.Encode(call); err != nil {
			return err
		}
	}
	return bw.Flush()
}
