package api

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
)

// Get answers from memory what a Get that reads ClickHouse answers, as the
// account changes: this replica's scorer updates the copy in place, and
// another writer's accounts.changed message drops it.
func TestGetFromMemoryFollowsTheWriters(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) {
		f := newFixture(t, db)
		ctx := f.caller
		fresh := NewAccounts(db, f.models, owner) // never follows: reads every time
		held := func(id string) bool {
			f.accounts.cache.mu.Lock()
			defer f.accounts.cache.mu.Unlock()
			return f.accounts.cache.entries[cacheKey{"t1", id}] != nil
		}
		same := func(id, when string) *accountsv1.Account {
			t.Helper()
			got, err := f.accounts.Get(ctx, &accountsv1.GetRequest{AccountId: id})
			if err != nil {
				t.Fatal(err)
			}
			want, err := fresh.Get(ctx, &accountsv1.GetRequest{AccountId: id})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.GetAccount(), want.GetAccount()) {
				t.Errorf("%s, %s:\nfrom memory %v\nread        %v", id, when, got.GetAccount(), want.GetAccount())
			}
			return got.GetAccount()
		}

		// A health history over the last weeks, so a new score moves the
		// Success Vector's slope.
		now := time.Now().UTC()
		var hist [][]any
		for d := 20; d >= 2; d-- {
			hist = append(hist, []any{"t1", "acc-1", now.Add(-time.Duration(d) * 24 * time.Hour).Truncate(time.Second), uint8(100 - 2*d), "green", 0.0, "[]"})
		}
		if err := db.Insert(ctx, "health_history", []string{"tenant_id", "account_id", "at", "score", "band", "intent_score", "components"}, hist); err != nil {
			t.Fatal(err)
		}
		before := same("acc-1", "first Get")
		if !held("acc-1") {
			t.Fatal("a Get did not keep the account it read")
		}

		// This replica's scorer: new traits and two data exports (cancel
		// intent, a new score for the history).
		testutil.InsertGroup(t, db, "t1", "acc-1", now.Add(-time.Minute), map[string]any{"seats": 9, "industry": "software"})
		testutil.InsertEvents(t, db,
			testutil.StoredEvent{Tenant: "t1", Account: "acc-1", Name: "Data Exported", User: "u0", At: now.Add(-2 * time.Minute)},
			testutil.StoredEvent{Tenant: "t1", Account: "acc-1", Name: "Data Exported", User: "u1", At: now.Add(-time.Minute)})
		if _, err := f.scorer.Score(ctx, "t1", []string{"acc-1"}, scorer.Span{From: now.Add(-time.Hour), To: now}, "events"); err != nil {
			t.Fatal(err)
		}
		if !held("acc-1") {
			t.Fatal("this replica's round dropped the account instead of updating it")
		}
		a := same("acc-1", "after a round of this replica's scorer")
		if a.GetTraits().GetFields()["seats"].GetNumberValue() != 9 || a.GetCancelIntent().GetScore() == 0 {
			t.Errorf("the round's traits and intent are not shown: seats %v, intent %v", a.GetTraits().GetFields()["seats"], a.GetCancelIntent())
		}
		if a.GetSuccessVector().GetHealthSlope() == before.GetSuccessVector().GetHealthSlope() {
			t.Errorf("the round's new score did not move the health slope: %v", a.GetSuccessVector())
		}

		// Another writer: milestone tracking stores acc-1's onboarding and
		// says so.
		cols := []string{"tenant_id", "account_id", "journey_id", "status", "start", "first_event_at", "state", "evaluated_at", "version"}
		start := now.Add(-20 * 24 * time.Hour).Truncate(time.Second)
		if err := db.Insert(ctx, "account_onboarding", cols, [][]any{{"t1", "acc-1", "j", "late", start, start,
			fmt.Sprintf(`{"journey_id":"j","start":%q,"milestones":[{"id":"connect","reached":true,"reached_at":%q}],"status":"late"}`,
				start.Format(time.RFC3339), now.Add(-24*time.Hour).Format(time.RFC3339)), now, uint64(1)}}); err != nil {
			t.Fatal(err)
		}
		if err := accounts.NewNotifier(f.bus.NC).Changed("t1", []string{"acc-1"}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); held("acc-1"); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("another writer's message did not drop the account")
			}
		}
		a = same("acc-1", "after milestone tracking stored its onboarding")
		if a.GetJourneyId() != "j" || a.GetOnboardingStatus() != "late" || a.GetSuccessVector().GetMilestonesLast_30D() != 1 {
			t.Errorf("the onboarding stored is not shown: journey %q, status %q, vector %v", a.GetJourneyId(), a.GetOnboardingStatus(), a.GetSuccessVector())
		}

		// Another tenant's message, or one for another account, drops nothing.
		if err := accounts.NewNotifier(f.bus.NC).Changed("t2", []string{"acc-1"}); err != nil {
			t.Fatal(err)
		}
		same("acc-1", "again")
		time.Sleep(100 * time.Millisecond)
		if !held("acc-1") {
			t.Error("t2's message dropped t1's account")
		}
	})
}

// A Get whose reads raced a change does not keep them; a replica skips its
// own messages; the copy stays within its size.
func TestGetCacheKeepsNothingStale(t *testing.T) {
	ctx := t.Context()
	c := newGetCache()
	c.max, c.origin = 2, "me"
	held := func(id string) bool { return c.entries[cacheKey{"t", id}] != nil }

	_, epoch := c.get(ctx, "t", "a")
	c.changed(accounts.Changed{Tenant: "t", Accounts: []string{"b"}, Origin: "other"})
	c.fill("t", "a", &getInputs{}, epoch)
	if held("a") {
		t.Error("a read that raced a change was kept")
	}
	_, epoch = c.get(ctx, "t", "a")
	c.stored(scorer.Stored{Tenant: "t", Scored: []string{"z"}})
	c.fill("t", "a", &getInputs{}, epoch)
	if held("a") {
		t.Error("a read that raced a round of the scorer was kept")
	}

	_, epoch = c.get(ctx, "t", "a")
	c.fill("t", "a", &getInputs{}, epoch)
	c.changed(accounts.Changed{Tenant: "t", Accounts: []string{"a"}, Origin: "me"})
	if !held("a") {
		t.Error("the replica's own message dropped what its scorer updated")
	}
	c.changed(accounts.Changed{Tenant: "t", Accounts: []string{"a"}, Origin: "other"})
	if held("a") {
		t.Error("another writer's message did not drop the account")
	}

	for _, id := range []string{"a", "b", "c"} {
		_, epoch = c.get(ctx, "t", id)
		c.fill("t", id, &getInputs{}, epoch)
	}
	if len(c.entries) != 2 || !held("c") {
		t.Errorf("kept %d accounts (max 2), the last one kept: %v", len(c.entries), held("c"))
	}
}

// The background reader fills the copy with every scored account, then
// with the accounts that a round scores for the first time and those that
// another writer changed; what it keeps is what a Get reads.
func TestTheCopyHoldsEveryScoredAccount(t *testing.T) {
	testutil.ForEachEngine(t, func(t *testing.T, db chstore.Store) { theCopyHoldsEveryScoredAccount(t, db) })
}

func theCopyHoldsEveryScoredAccount(t *testing.T, db chstore.Store) {
	f := newFixture(t, db)
	ctx := f.caller
	fresh := NewAccounts(db, f.models, owner)
	go f.accounts.Run(ctx)
	heldAll := func(what string, ids ...string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			f.accounts.cache.mu.Lock()
			n := 0
			for _, id := range ids {
				if f.accounts.cache.entries[cacheKey{"t1", id}] != nil {
					n++
				}
			}
			f.accounts.cache.mu.Unlock()
			if n == len(ids) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d accounts held", what, n, len(ids))
			}
		}
		for _, id := range ids {
			f.accounts.cache.mu.Lock()
			in := f.accounts.cache.entries[cacheKey{"t1", id}]
			f.accounts.cache.mu.Unlock()
			if in == nil {
				continue // dropped since: a Get reads it
			}
			want, err := fresh.Get(ctx, &accountsv1.GetRequest{AccountId: id})
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.accounts.Get(ctx, &accountsv1.GetRequest{AccountId: id})
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.GetAccount(), want.GetAccount()) {
				t.Errorf("%s, %s:\nheld %v\nread %v", what, id, got.GetAccount(), want.GetAccount())
			}
		}
	}
	heldAll("at start", "acc-0", "acc-1", "acc-2", "acc-3", "acc-4")

	now := time.Now().UTC()
	testutil.InsertEvents(t, db, testutil.StoredEvent{Tenant: "t1", Account: "acc-new", Name: "A", User: "u0", At: now.Add(-time.Minute)})
	if _, err := f.scorer.Score(ctx, "t1", []string{"acc-new"}, scorer.Span{From: now.Add(-time.Hour), To: now}, "events"); err != nil {
		t.Fatal(err)
	}
	heldAll("a new account scored", "acc-new")

	cols := []string{"tenant_id", "account_id", "journey_id", "status", "start", "first_event_at", "state", "evaluated_at", "version"}
	if err := db.Insert(ctx, "account_onboarding", cols, [][]any{{"t1", "acc-2", "j", "stalled", now.Add(-20 * 24 * time.Hour), now.Add(-20 * 24 * time.Hour),
		`{"journey_id":"j","milestones":[],"status":"stalled"}`, now, uint64(1)}}); err != nil {
		t.Fatal(err)
	}
	if err := accounts.NewNotifier(f.bus.NC).Changed("t1", []string{"acc-2"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		f.accounts.cache.mu.Lock()
		in := f.accounts.cache.entries[cacheKey{"t1", "acc-2"}]
		f.accounts.cache.mu.Unlock()
		if in != nil && in.onboarding.status == "stalled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the account another writer changed was not read again")
		}
	}
	heldAll("after milestone tracking stored its onboarding", "acc-2")
}

// What the background reader read is not kept for an account that
// changed while it read: that one is read again.
func TestTheBackgroundReadKeepsNothingStale(t *testing.T) {
	c := newGetCache()
	c.max = 10
	c.mu.Lock()
	c.wantLocked(cacheKey{"t", "a"})
	c.wantLocked(cacheKey{"t", "b"})
	c.mu.Unlock()
	tenant, ids := c.next()
	if tenant != "t" || len(ids) != 2 {
		t.Fatalf("next: %s %v", tenant, ids)
	}
	c.changed(accounts.Changed{Tenant: "t", Accounts: []string{"a"}, Origin: "other"})
	c.keep(tenant, ids, map[string]*getInputs{"a": {}, "b": {}})
	if c.entries[cacheKey{"t", "a"}] != nil || !c.toRead[cacheKey{"t", "a"}] {
		t.Error("an account changed during the read was kept, or not read again")
	}
	if c.entries[cacheKey{"t", "b"}] == nil || c.toRead[cacheKey{"t", "b"}] {
		t.Error("an account unchanged during the read was not kept")
	}
}

func TestWithPoint(t *testing.T) {
	h := withPoint([][2]float64{{1, 10}, {3, 30}}, [2]float64{2, 20})
	h = withPoint(h, [2]float64{3, 31}) // same time: replaced
	h = withPoint(h, [2]float64{40, 40})
	want := [][2]float64{{40, 40}} // the others are over 30 days before it
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", h, want)
	}
	h = withPoint([][2]float64{{1, 10}, {3, 30}}, [2]float64{2, 20})
	h = withPoint(h, [2]float64{3, 31})
	if want := [][2]float64{{1, 10}, {2, 20}, {3, 31}}; fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", h, want)
	}
}
