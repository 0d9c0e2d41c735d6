// Package api serves stickpoint.accounts.v1 and stickpoint.health.v1.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
)

// Accounts serves stickpoint.accounts.v1: an account is known once it is
// scored, which its first stored event brings about.
type Accounts struct {
	accountsv1.UnimplementedAccountsServiceServer
	db     chstore.Store
	models *models.Store
	traits *accounts.Reader
	// ownerTrait is the trait naming a tenant's accounts' owner.
	ownerTrait func(tenant string) string
	cache      *getCache
	log        *slog.Logger
}

// NewAccounts serves the accounts API.
func NewAccounts(db chstore.Store, ms *models.Store, ownerTrait func(tenant string) string) *Accounts {
	return &Accounts{db: db, models: ms, traits: accounts.NewReader(db), ownerTrait: ownerTrait, cache: newGetCache()}
}

// Follow makes Get keep up to size accounts in memory, current with sc's
// rounds (in place) and with every other writer's accounts.changed
// messages on nc; Run fills it. Until it is called, Get keeps nothing.
func (s *Accounts) Follow(nc *nats.Conn, sc *scorer.Scorer, size int, log *slog.Logger) error {
	s.cache.origin = sc.Changed.Origin() // before any message can come
	l, err := accounts.Listen(nc, s.cache.changed)
	if err != nil {
		return err
	}
	s.cache.mu.Lock()
	s.cache.listener, s.cache.max = l, size
	s.cache.wakeLocked() // for the first listing
	s.cache.mu.Unlock()
	sc.OnStored = s.cache.stored
	s.log = log
	return nil
}

// Run reads in the background the accounts Get keeps in memory: every
// scored account at start (the most recently scored first, up to the
// size), then those that change. It returns when ctx ends.
func (s *Accounts) Run(ctx context.Context) {
	s.cache.run(ctx, s.log, s.scoredAccounts, s.readMany)
}

// scoredAccounts lists up to n scored accounts of every tenant, the most
// recently scored first.
func (s *Accounts) scoredAccounts(ctx context.Context, n int) ([]cacheKey, error) {
	rows, err := s.db.Query(ctx, `SELECT tenant_id, account_id, max(evaluated_at) AS at FROM account_health
		GROUP BY tenant_id, account_id ORDER BY at DESC LIMIT ?`, n)
	if err != nil {
		return nil, fmt.Errorf("list scored accounts: %w", err)
	}
	var out []cacheKey
	for rows.Next() {
		var k cacheKey
		var at time.Time
		if err := rows.Scan(&k.tenant, &k.account, &at); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func unavailable(err error) error { return status.Error(codes.Unavailable, err.Error()) }

// Get returns one account: from the replica's copy in memory when it
// holds the account (see getCache), else read in one round of queries
// (its row and the reads that extend it need only the account's id, so
// they all run at once) and kept.
func (s *Accounts) Get(ctx context.Context, req *accountsv1.GetRequest) (*accountsv1.GetResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	id := req.GetAccountId()
	g, gctx := errgroup.WithContext(ctx)
	var model models.Stored
	g.Go(func() (err error) { model, err = s.models.Get(gctx, tenant); return err })
	in, epoch := s.cache.get(ctx, tenant, id)
	if in == nil {
		g.Go(func() error {
			got, err := s.readMany(gctx, tenant, []string{id})
			if in = got[id]; in != nil {
				s.cache.fill(tenant, id, in, epoch)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, unavailable(err)
	}
	if in == nil {
		return nil, status.Errorf(codes.NotFound, "account %q has no scored events", id)
	}
	ext := extensions{model: model, now: time.Now().UTC(),
		traits: map[string]accounts.Traits{id: in.traits}, history: map[string][][2]float64{id: in.history}}
	if in.boarded {
		ext.starts = map[string]onboarding{id: in.onboarding}
	}
	if in.hasSpan {
		ext.acts = map[string][2]time.Time{id: in.span}
	}
	return &accountsv1.GetResponse{Account: s.protos(tenant, []scorer.Row{in.row}, ext)[0]}, nil
}

// readMany reads what Get shows of accounts of a tenant in one round of
// queries (their rows and the reads that extend them need only the ids,
// so they run at once); accounts without a row (no scored events) are
// left out.
func (s *Accounts) readMany(ctx context.Context, tenant string, ids []string) (map[string]*getInputs, error) {
	var rows []scorer.Row
	var ext extensions
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		rows, err = scorer.ReadRows(gctx, s.db, tenant, "AND account_id IN ?", chstore.In(ids))
		return err
	})
	g.Go(func() (err error) {
		ext, err = s.extensions(gctx, tenant, ids, true)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	acts, err := s.activity(ctx, tenant, rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*getInputs, len(rows))
	for _, r := range rows {
		id := r.AccountID
		in := &getInputs{row: r, traits: ext.traits[id], history: ext.history[id]}
		in.onboarding, in.boarded = ext.starts[id]
		in.span, in.hasSpan = acts[id]
		out[id] = in
	}
	return out, nil
}

// List lists accounts, filtered and sorted, a page at a time.
func (s *Accounts) List(ctx context.Context, req *accountsv1.ListRequest) (*accountsv1.ListResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	size, after, err := grpcserver.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	where, args, err := s.filters(ctx, tenant, req)
	if err != nil {
		return nil, err
	}
	// Pages go by (sort key, account id); the token holds the last pair.
	key := "account_id"
	switch req.GetSort() {
	case accountsv1.Sort_SORT_HEALTH:
		key = "score"
	case accountsv1.Sort_SORT_CHANGE:
		key = "change"
	}
	var cursor []any
	if after != "" {
		k, id, _ := strings.Cut(after, "\x00")
		cursor = []any{cursorKey(req.GetSort(), k), id}
	}
	want := map[string]string{}
	for _, kv := range req.GetTraitEquals() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, status.Errorf(codes.InvalidArgument, "trait_equals %q is not key=value", kv)
		}
		want[k] = v
	}
	if req.GetOwner() != "" {
		want[s.ownerTrait(tenant)] = req.GetOwner()
	}
	out := &accountsv1.ListResponse{}
	// Trait and expansion filters run here, so pages are read until one
	// is full or the accounts end.
	for {
		q, qargs := where, slices.Clone(args)
		if cursor != nil {
			q += " AND (" + key + " > ? OR (" + key + " = ? AND account_id > ?))"
			qargs = append(qargs, cursor[0], cursor[0], cursor[1])
		}
		rows, err := scorer.ReadRows(ctx, s.db, tenant, q+" ORDER BY "+key+", account_id LIMIT ?", append(qargs, size)...)
		if err != nil {
			return nil, unavailable(err)
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.AccountID
		}
		ext, err := s.extensions(ctx, tenant, ids, req.GetExpansionReady())
		if err == nil {
			ext.acts, err = s.activity(ctx, tenant, rows)
		}
		if err != nil {
			return nil, unavailable(err)
		}
		accts := s.protos(tenant, rows, ext)
		for i, a := range accts {
			if !traitsMatch(a, want) || (req.GetExpansionReady() && !a.GetExpansionReady()) {
				continue
			}
			out.Accounts = append(out.Accounts, a)
			if len(out.Accounts) == size {
				out.NextPageToken = grpcserver.PageToken(sortKey(req.GetSort(), rows[i]) + "\x00" + rows[i].AccountID)
				return out, nil
			}
		}
		if len(rows) < size {
			return out, nil
		}
		last := rows[len(rows)-1]
		cursor = []any{cursorKey(req.GetSort(), sortKey(req.GetSort(), last)), last.AccountID}
	}
}

func sortKey(sort accountsv1.Sort, r scorer.Row) string {
	switch sort {
	case accountsv1.Sort_SORT_HEALTH:
		return fmt.Sprint(r.Score)
	case accountsv1.Sort_SORT_CHANGE:
		return fmt.Sprint(r.Change)
	}
	return r.AccountID
}

// cursorKey is a token's sort key as the query compares it.
func cursorKey(sort accountsv1.Sort, k string) any {
	if sort == accountsv1.Sort_SORT_UNSPECIFIED {
		return k
	}
	n, _ := strconv.Atoi(k)
	return n
}

// onboardingStatuses are milestone tracking's statuses.
var onboardingStatuses = []string{"on_track", "at_risk", "late", "stalled", "completed"}

func (s *Accounts) filters(ctx context.Context, tenant string, req *accountsv1.ListRequest) (string, []any, error) {
	where, args := "", []any{}
	if st := req.GetOnboardingStatus(); st != "" {
		if !slices.Contains(onboardingStatuses, st) {
			return "", nil, status.Errorf(codes.InvalidArgument, "onboarding_status %q is not one of %v", st, onboardingStatuses)
		}
		// Read live from milestone tracking: the status stored with the
		// score may trail it by a round.
		where += " AND account_id IN (SELECT account_id FROM account_onboarding FINAL WHERE tenant_id = ? AND status = ?)"
		args = append(args, tenant, st)
	}
	if b := req.GetBand(); b != "" {
		if !slices.Contains([]string{model.Red, model.Yellow, model.Green}, b) {
			return "", nil, status.Errorf(codes.InvalidArgument, "band %q is not red, yellow or green", b)
		}
		where += " AND band = ?"
		args = append(args, b)
	}
	if f := req.GetFit(); f != "" {
		if !slices.Contains(model.Fits, f) {
			return "", nil, status.Errorf(codes.InvalidArgument, "fit %q is not one of %v", f, model.Fits)
		}
		where += " AND fit = ?"
		args = append(args, f)
	}
	if req.GetAtRisk() {
		where += " AND at_risk = 1"
	}
	if req.GetCancelIntent() {
		m, err := s.models.Get(ctx, tenant)
		if err != nil {
			return "", nil, unavailable(err)
		}
		where += " AND intent_score >= ?"
		args = append(args, m.Spec.CancelIntent.Threshold)
	}
	if req.GetExpansionReady() {
		where += " AND band = 'green'"
	}
	return where, args, nil
}

func traitsMatch(a *accountsv1.Account, want map[string]string) bool {
	for k, v := range want {
		f, ok := a.GetTraits().GetFields()[k]
		if !ok {
			return false
		}
		got := f.GetStringValue()
		if _, isString := f.GetKind().(*structpb.Value_StringValue); !isString {
			b, _ := f.MarshalJSON()
			got = string(b)
		}
		if got != v {
			return false
		}
	}
	return true
}

// extensions are what an account's proto holds beyond its health row:
// traits, onboarding, the tenant's model, the Success Vector when asked (it
// reads the health history), and the first and last event of rows scored
// before the state kept them.
type extensions struct {
	traits map[string]accounts.Traits
	acts   map[string][2]time.Time // first and last event, of rows whose state lacks them
	starts map[string]onboarding
	// history is each account's health points (day, score) for the
	// Success Vector; nil when it is not asked for.
	history map[string][][2]float64
	model   models.Stored
	now     time.Time // the Success Vector's
}

// extensions reads the accounts' extensions. The reads are independent:
// they run at once, so the slowest sets the latency, not the sum.
func (s *Accounts) extensions(ctx context.Context, tenant string, ids []string, vector bool) (extensions, error) {
	var ext extensions
	if len(ids) == 0 {
		return ext, nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { ext.traits, err = s.traits.Traits(gctx, tenant, ids); return err })
	g.Go(func() (err error) { ext.starts, err = onboardingOf(gctx, s.db, tenant, ids); return err })
	g.Go(func() (err error) { ext.model, err = s.models.Get(gctx, tenant); return err })
	ext.now = time.Now().UTC()
	if vector {
		g.Go(func() (err error) { ext.history, err = healthHistory(gctx, s.db, tenant, ids, ext.now); return err })
	}
	err := g.Wait()
	return ext, err
}

// activity is the first and last event of the rows whose state does not
// hold them (scored before it did), read from account_activity; the
// others need no read.
func (s *Accounts) activity(ctx context.Context, tenant string, rows []scorer.Row) (map[string][2]time.Time, error) {
	var old []string
	for _, r := range rows {
		if r.State.LastEvent.IsZero() {
			old = append(old, r.AccountID)
		}
	}
	if len(old) == 0 {
		return nil, nil
	}
	return s.traits.Activity(ctx, tenant, old)
}

// protos builds the accounts of rows from their extensions.
func (s *Accounts) protos(tenant string, rows []scorer.Row, ext extensions) []*accountsv1.Account {
	owner := s.ownerTrait(tenant)
	out := make([]*accountsv1.Account, len(rows))
	for i, r := range rows {
		tr := ext.traits[r.AccountID]
		h := r.Health(ext.model.Spec)
		first, last := r.State.FirstEvent, r.State.LastEvent
		if span, ok := ext.acts[r.AccountID]; ok {
			first, last = span[0], span[1]
		}
		a := &accountsv1.Account{Id: r.AccountID, Owner: tr.Text(owner), OnboardingStatus: ext.starts[r.AccountID].status, Fit: r.Fit,
			FirstEventAt: timestamppb.New(first), LastEventAt: timestamppb.New(last),
			Health: &accountsv1.AccountHealth{Score: int32(r.Score), Band: r.Band, Components: scorer.Components(h.Components),
				EvaluatedAt: timestamppb.New(r.EvaluatedAt), Summary: h.Summary(), Change: int32(r.Change),
				ActiveUsers: int32(h.ActiveUsers), Seats: int32(r.State.Seats), ModelVersion: r.State.ModelVersion},
			CancelIntent:  scorer.IntentEvidence(h.Intent),
			AtRiskBecause: scorer.AtRiskBecause(r.Band, h.Intent.Over(), ext.starts[r.AccountID].status),
		}
		a.AtRisk = len(a.AtRiskBecause) > 0
		if o, ok := ext.starts[r.AccountID]; ok {
			a.Start, a.JourneyId = timestamppb.New(o.start), o.journey
		} else {
			a.Start = timestamppb.New(first)
		}
		if !r.ChurnedAt.IsZero() { // ReadRows gives the zero time when not churned
			a.ChurnedAt = timestamppb.New(r.ChurnedAt)
		}
		if ext.history != nil {
			v := successVector(ext.starts[r.AccountID].reached, ext.history[r.AccountID], ext.now)
			a.SuccessVector = v
			// Expansion-ready: green, heading up, and active users near
			// the seats (80% or more).
			a.ExpansionReady = r.Band == model.Green && v.GetPositive() && r.State.Seats > 0 && float64(h.ActiveUsers) >= 0.8*r.State.Seats
		}
		fields := map[string]any{}
		for k, raw := range tr {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				fields[k] = v
			}
		}
		if st, err := structpb.NewStruct(fields); err == nil {
			a.Traits = st
		}
		out[i] = a
	}
	return out
}

type onboarding struct {
	start           time.Time
	journey, status string
	// reached is when each milestone of the journey was reached, as its
	// latest evaluation has them.
	reached []time.Time
}

// journeyState is the part of milestone tracking's state (its progress.State,
// stored as JSON) that the Success Vector reads.
type journeyState struct {
	Milestones []struct {
		Reached   bool      `json:"reached"`
		ReachedAt time.Time `json:"reached_at"`
	} `json:"milestones"`
}

// onboardingOf reads the accounts' start, journey, status and milestones
// reached from milestone tracking's latest evaluation.
func onboardingOf(ctx context.Context, db chstore.Store, tenant string, ids []string) (map[string]onboarding, error) {
	rows, err := db.Query(ctx, `SELECT account_id, start, journey_id, status, state FROM account_onboarding FINAL WHERE tenant_id = ? AND account_id IN ?`,
		tenant, chstore.In(ids))
	if err != nil {
		return nil, fmt.Errorf("read onboarding: %w", err)
	}
	out := map[string]onboarding{}
	for rows.Next() {
		var id, state string
		var o onboarding
		if err := rows.Scan(&id, &o.start, &o.journey, &o.status, &state); err != nil {
			return nil, err
		}
		var st journeyState
		if state != "" {
			if err := json.Unmarshal([]byte(state), &st); err != nil {
				return nil, fmt.Errorf("account %s: stored onboarding state: %w", id, err)
			}
		}
		for _, m := range st.Milestones {
			if m.Reached {
				o.reached = append(o.reached, m.ReachedAt)
			}
		}
		out[id] = o
	}
	return out, nil
}

// healthHistory reads each account's scores over the 30 days before now,
// as (day, score) points in time order.
func healthHistory(ctx context.Context, db chstore.Store, tenant string, ids []string, now time.Time) (map[string][][2]float64, error) {
	rows, err := db.Query(ctx, `SELECT account_id, toUnixTimestamp(at), score FROM health_history FINAL
		WHERE tenant_id = ? AND account_id IN ? AND at > ? ORDER BY account_id, at`, tenant, chstore.In(ids), now.Add(-vectorWindow))
	if err != nil {
		return nil, fmt.Errorf("read health history: %w", err)
	}
	points := map[string][][2]float64{}
	for rows.Next() {
		var id string
		var at, sc uint64
		if err := rows.Scan(&id, &at, &sc); err != nil {
			return nil, err
		}
		points[id] = append(points[id], [2]float64{float64(at) / 86400, float64(sc)})
	}
	return points, nil
}

// vectorWindow is the Success Vector's period: milestones reached in the
// last one and the one before, and the health slope over the last.
const vectorWindow = 30 * specfile.Day

// successVector is an account's milestones reached in the last 30 days and
// the 30 before, from its journey's current state (so a journey changed
// since, which moves reached times, counts each milestone once), and its
// health slope over the last 30 days (least squares over the history).
func successVector(reached []time.Time, history [][2]float64, now time.Time) *accountsv1.SuccessVector {
	v := &accountsv1.SuccessVector{}
	for _, at := range reached {
		switch {
		case at.After(now):
		case at.After(now.Add(-vectorWindow)):
			v.MilestonesLast_30D++
		case at.After(now.Add(-2 * vectorWindow)):
			v.MilestonesPrevious_30D++
		}
	}
	v.MilestonesChange = v.MilestonesLast_30D - v.MilestonesPrevious_30D
	// Points from before the window (a copy in memory keeps them a while)
	// are left out.
	from := float64(now.Add(-vectorWindow).Unix()) / 86400
	i, _ := slices.BinarySearchFunc(history, from, func(p [2]float64, t float64) int {
		if p[0] <= t {
			return -1
		}
		return 1
	})
	v.HealthSlope = math.Round(slope(history[i:])*100) / 100
	v.Positive = (v.MilestonesChange > 0 || v.HealthSlope > 0) && v.MilestonesChange >= 0 && v.HealthSlope >= 0
	return v
}

// slope is the least-squares slope of (day, score) points; 0 for fewer
// than two.
//
// Points less than a day apart make no trend: history stored in one go
// (a backfill, an import) is scored many times within seconds, and any
// wobble between those scores would read as hundreds of points a day.
func slope(ps [][2]float64) float64 {
	if len(ps) < 2 || ps[len(ps)-1][0]-ps[0][0] < 1 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for _, p := range ps {
		sx += p[0]
		sy += p[1]
		sxx += p[0] * p[0]
		sxy += p[0] * p[1]
	}
	n := float64(len(ps))
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// Usage returns an account's usage per UTC day.
func (s *Accounts) Usage(ctx context.Context, req *accountsv1.UsageRequest) (*accountsv1.UsageResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	days := req.GetDays()
	switch {
	case days == 0:
		days = 30
	case days < 0 || days > 400:
		return nil, status.Errorf(codes.InvalidArgument, "days %d is not between 1 and 400", days)
	}
	since := time.Now().UTC().Truncate(specfile.Day).Add(-time.Duration(days-1) * specfile.Day)
	// One account's events: read them (each messageId once), for counts
	// by name that the rollup does not keep.
	rows, err := s.db.Query(ctx, `SELECT toDateTime(toDate(timestamp)) AS d, if(type = 'track', name, concat(type, ':', name)) AS n,
			uniqExact(message_id), groupUniqArrayIf(user_id, user_id != '')
		FROM events WHERE tenant_id = ? AND account_id = ? AND timestamp >= ? AND type IN ('track', 'page', 'screen')
		GROUP BY d, n ORDER BY d`, tenant, req.GetAccountId(), since)
	if err != nil {
		return nil, unavailable(err)
	}
	out := &accountsv1.UsageResponse{}
	users := map[int]map[string]bool{}
	for rows.Next() {
		var day time.Time
		var name string
		var events uint64
		var us []string
		if err := rows.Scan(&day, &name, &events, &us); err != nil {
			return nil, unavailable(err)
		}
		n := len(out.Days)
		if n == 0 || !out.Days[n-1].GetDay().AsTime().Equal(day) {
			out.Days = append(out.Days, &accountsv1.UsageDay{Day: timestamppb.New(day), ByEvent: map[string]int64{}})
			n++
			users[n-1] = map[string]bool{}
		}
		d := out.Days[n-1]
		d.Events += int64(events)
		d.ByEvent[name] += int64(events)
		for _, u := range us {
			users[n-1][u] = true
		}
		d.ActiveUsers = int32(len(users[n-1]))
	}
	return out, nil
}
