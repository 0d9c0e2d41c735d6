// Package api serves stickpoint.milestones.v1 and stickpoint.accounts.v1
// from the journeys store and the evaluations in account_onboarding. The
// tenant always comes from the caller's token.
package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	milestonesv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/milestones/v1"
	"github.com/stickpoint/stickpoint/services/milestones/internal/evaluator"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journey"
	"github.com/stickpoint/stickpoint/services/milestones/internal/journeys"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

// Milestones serves stickpoint.milestones.v1.
type Milestones struct {
	milestonesv1.UnimplementedMilestonesServiceServer
	db       chstore.Store
	journeys *journeys.Store
	eval     *evaluator.Evaluator
	// backfill starts a recompute of a tenant's accounts in the background.
	backfill func(tenant, reason string)
}

// NewMilestones serves the milestones API; backfill starts a tenant's
// recompute after its journeys change.
func NewMilestones(db chstore.Store, js *journeys.Store, eval *evaluator.Evaluator, backfill func(tenant, reason string)) *Milestones {
	return &Milestones{db: db, journeys: js, eval: eval, backfill: backfill}
}

func unavailable(err error) error { return status.Error(codes.Unavailable, err.Error()) }

// PutJourney stores a journey file as its next version and backfills.
func (s *Milestones) PutJourney(ctx context.Context, req *milestonesv1.PutJourneyRequest) (*milestonesv1.PutJourneyResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, unchanged, err := s.journeys.Put(ctx, tenant, []byte(req.GetSource()))
	var bad *specfile.Error
	switch {
	case errors.As(err, &bad):
		return nil, status.Error(codes.InvalidArgument, bad.Error())
	case errors.Is(err, journeys.ErrTooMany):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, unavailable(err)
	}
	if !unchanged {
		s.backfill(tenant, fmt.Sprintf("journey %s version %d", st.ID, st.Version))
	}
	return &milestonesv1.PutJourneyResponse{Journey: journeyProto(st), Unchanged: unchanged}, nil
}

// GetJourney returns a journey.
func (s *Milestones) GetJourney(ctx context.Context, req *milestonesv1.GetJourneyRequest) (*milestonesv1.GetJourneyResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.journeys.Get(ctx, tenant, req.GetId())
	if errors.Is(err, journeys.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "journey %q not found", req.GetId())
	} else if err != nil {
		return nil, unavailable(err)
	}
	return &milestonesv1.GetJourneyResponse{Journey: journeyProto(st)}, nil
}

// ListJourneys lists journeys in the order accounts try them.
func (s *Milestones) ListJourneys(ctx context.Context, _ *milestonesv1.ListJourneysRequest) (*milestonesv1.ListJourneysResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	js, err := s.journeys.List(ctx, tenant)
	if err != nil {
		return nil, unavailable(err)
	}
	out := &milestonesv1.ListJourneysResponse{}
	for _, st := range js {
		out.Journeys = append(out.Journeys, journeyProto(st))
	}
	return out, nil
}

// DeleteJourney deletes a journey and backfills.
func (s *Milestones) DeleteJourney(ctx context.Context, req *milestonesv1.DeleteJourneyRequest) (*milestonesv1.DeleteJourneyResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	err = s.journeys.Delete(ctx, tenant, req.GetId())
	if errors.Is(err, journeys.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "journey %q not found", req.GetId())
	} else if err != nil {
		return nil, unavailable(err)
	}
	s.backfill(tenant, "journey "+req.GetId()+" deleted")
	return &milestonesv1.DeleteJourneyResponse{}, nil
}

// GetBackfill reports the tenant's latest backfill in this process.
func (s *Milestones) GetBackfill(ctx context.Context, _ *milestonesv1.GetBackfillRequest) (*milestonesv1.GetBackfillResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	bf, ok, err := s.journeys.Backfill(ctx, tenant)
	if err != nil {
		return nil, unavailable(err)
	}
	if !ok {
		return nil, status.Error(codes.NotFound, "no backfill has run for this tenant")
	}
	out := &milestonesv1.GetBackfillResponse{Reason: bf.Reason, AccountsTotal: bf.Total, AccountsDone: bf.Done,
		Done: bf.Finished, StartedAt: timestamppb.New(bf.StartedAt), Error: bf.Err}
	if bf.Finished {
		out.FinishedAt = timestamppb.New(bf.FinishedAt)
	}
	return out, nil
}

// GetProgress is one account's progress.
func (s *Milestones) GetProgress(ctx context.Context, req *milestonesv1.GetProgressRequest) (*milestonesv1.GetProgressResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := evaluator.ReadRows(ctx, s.db, tenant, []string{req.GetAccountId()}, "")
	if err != nil {
		return nil, unavailable(err)
	}
	if len(rows) == 0 {
		return nil, status.Errorf(codes.NotFound, "account %q has no evaluated events", req.GetAccountId())
	}
	if rows[0].State == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "no journey applies to account %q (see `stickpoint journeys list`)", req.GetAccountId())
	}
	defs := s.definitions(ctx, tenant)
	return &milestonesv1.GetProgressResponse{Onboarding: onboardingProto(rows[0], defs)}, nil
}

// definitions are the milestones of the tenant's current journeys, by
// journey and milestone id, to name them in answers.
func (s *Milestones) definitions(ctx context.Context, tenant string) map[string]journey.Milestone {
	out := map[string]journey.Milestone{}
	js, err := s.journeys.List(ctx, tenant)
	if err != nil {
		return out // answers then show ids without names
	}
	for _, st := range js {
		for _, m := range st.Journey.Milestones {
			out[st.ID+"/"+m.ID] = m
		}
	}
	return out
}

// ListAccounts lists accounts by onboarding status.
func (s *Milestones) ListAccounts(ctx context.Context, req *milestonesv1.ListAccountsRequest) (*milestonesv1.ListAccountsResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetStatus() != "" && !slices.Contains(progress.Statuses, req.GetStatus()) {
		return nil, status.Errorf(codes.InvalidArgument, "status %q is not one of %v", req.GetStatus(), progress.Statuses)
	}
	size, after, err := grpcserver.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	extra, args := "AND journey_id != '' AND account_id > ?", []any{after}
	if req.GetStatus() != "" {
		extra += " AND status = ?"
		args = append(args, req.GetStatus())
	}
	if req.GetJourneyId() != "" {
		extra += " AND journey_id = ?"
		args = append(args, req.GetJourneyId())
	}
	rows, err := evaluator.ReadRows(ctx, s.db, tenant, nil, extra+" ORDER BY account_id LIMIT ?", append(args, size+1)...)
	if err != nil {
		return nil, unavailable(err)
	}
	out := &milestonesv1.ListAccountsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		out.NextPageToken = grpcserver.PageToken(rows[size-1].AccountID)
	}
	defs := s.definitions(ctx, tenant)
	for _, r := range rows {
		out.Accounts = append(out.Accounts, onboardingProto(r, defs))
	}
	return out, nil
}

// journeyRows reads the evaluations of the accounts following a journey
// (the tenant's first when id is empty).
func (s *Milestones) journeyRows(ctx context.Context, tenant, id string) (journeys.Stored, []evaluator.Row, error) {
	var st journeys.Stored
	if id == "" {
		js, err := s.journeys.List(ctx, tenant)
		if err != nil {
			return st, nil, unavailable(err)
		}
		if len(js) == 0 {
			return st, nil, status.Error(codes.NotFound, "the tenant has no journey: put one with `stickpoint journeys put FILE`")
		}
		st = js[0]
	} else {
		var err error
		if st, err = s.journeys.Get(ctx, tenant, id); errors.Is(err, journeys.ErrNotFound) {
			return st, nil, status.Errorf(codes.NotFound, "journey %q not found", id)
		} else if err != nil {
			return st, nil, unavailable(err)
		}
	}
	rows, err := evaluator.ReadRows(ctx, s.db, tenant, nil, "AND journey_id = ?", st.ID)
	if err != nil {
		return st, nil, unavailable(err)
	}
	return st, rows, nil
}

// Funnel counts, per milestone, the accounts that reached it and how long
// it took them from their start.
func (s *Milestones) Funnel(ctx context.Context, req *milestonesv1.FunnelRequest) (*milestonesv1.FunnelResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, rows, err := s.journeyRows(ctx, tenant, req.GetJourneyId())
	if err != nil {
		return nil, err
	}
	times := make([][]time.Duration, len(st.Journey.Milestones))
	for _, r := range rows {
		for _, m := range r.State.Milestones {
			if i := milestoneIndex(st.Journey, m.ID); i >= 0 && m.Reached {
				times[i] = append(times[i], max(m.ReachedAt.Sub(r.State.Start), 0))
			}
		}
	}
	out := &milestonesv1.FunnelResponse{JourneyId: st.ID, Accounts: int64(len(rows))}
	for i, m := range st.Journey.Milestones {
		step := &milestonesv1.FunnelStep{MilestoneId: m.ID, Name: m.Name, Reached: int64(len(times[i]))}
		if len(times[i]) > 0 {
			slices.Sort(times[i])
			step.MedianTime = durationpb.New(quantile(times[i], 0.5))
			step.P90Time = durationpb.New(quantile(times[i], 0.9))
		}
		out.Steps = append(out.Steps, step)
	}
	return out, nil
}

// quantile is the nearest-rank quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(q*float64(len(sorted)) + 0.999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func milestoneIndex(j journey.Journey, id string) int {
	return slices.IndexFunc(j.Milestones, func(m journey.Milestone) bool { return m.ID == id })
}

// StickPoint reports the accounts past the stick point and how far they got.
func (s *Milestones) StickPoint(ctx context.Context, req *milestonesv1.StickPointRequest) (*milestonesv1.StickPointResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, rows, err := s.journeyRows(ctx, tenant, req.GetJourneyId())
	if err != nil {
		return nil, err
	}
	now := s.eval.Now()
	out := &milestonesv1.StickPointResponse{JourneyId: st.ID, Accounts: int64(len(rows)),
		ByMilestonesReached: make([]int64, len(st.Journey.Milestones)+1)}
	var past []evaluator.Row
	for _, r := range rows {
		// Judged at now, not at the last evaluation: age needs no events.
		if now.Before(r.State.StickPointAt) {
			continue
		}
		r.State.PastStickPoint = true
		past = append(past, r)
		out.ByMilestonesReached[min(reachedCount(r), len(st.Journey.Milestones))]++
		if r.Status == progress.Completed {
			out.PastCompleted++
		}
	}
	out.PastStickPoint = int64(len(past))
	slices.SortStableFunc(past, func(a, b evaluator.Row) int { return reachedCount(a) - reachedCount(b) })
	defs := s.definitions(ctx, tenant)
	for _, r := range past[:min(len(past), 1000)] {
		out.Past = append(out.Past, onboardingProto(r, defs))
	}
	return out, nil
}

func reachedCount(r evaluator.Row) int {
	n := 0
	for _, m := range r.State.Milestones {
		if m.Reached {
			n++
		}
	}
	return n
}

func journeyProto(st journeys.Stored) *milestonesv1.Journey {
	out := &milestonesv1.Journey{Id: st.ID, Name: st.Journey.Name, Version: st.Version, UpdatedAt: timestamppb.New(st.UpdatedAt), Source: st.Source}
	for _, m := range st.Journey.Milestones {
		out.Milestones = append(out.Milestones, &milestonesv1.MilestoneDefinition{
			Id: m.ID, Name: m.Name, Event: m.Event, Target: durationpb.New(m.Target), Threshold: thresholdText(m.Threshold),
		})
	}
	return out
}

func thresholdText(t journey.Threshold) string {
	if t.Kind == journey.DistinctDays {
		return fmt.Sprintf("%s: %d, window: %s", t.Kind, t.N, specfile.FormatDuration(t.Window))
	}
	return fmt.Sprintf("%s: %d", t.Kind, t.N)
}

func onboardingProto(r evaluator.Row, defs map[string]journey.Milestone) *milestonesv1.Onboarding {
	st := r.State
	out := &milestonesv1.Onboarding{
		AccountId: r.AccountID, JourneyId: st.JourneyID, JourneyVersion: st.JourneyVersion, Status: st.Status,
		StatusSince: timestamppb.New(st.StatusSince), Cause: st.Cause, Start: timestamppb.New(st.Start),
		StickPointAt: timestamppb.New(st.StickPointAt), PastStickPoint: st.PastStickPoint, EvaluatedAt: timestamppb.New(r.EvaluatedAt),
	}
	if st.TimeToFirstValue > 0 {
		out.TimeToFirstValue = durationpb.New(st.TimeToFirstValue)
	}
	for _, m := range st.Milestones {
		def := defs[st.JourneyID+"/"+m.ID]
		mp := &milestonesv1.MilestoneProgress{Id: m.ID, Name: def.Name, Event: def.Event, Reached: m.Reached,
			TargetAt: timestamppb.New(m.TargetAt), Progress: int32(m.Progress), Required: int32(m.Required)}
		if mp.Name == "" {
			mp.Name = m.ID
		}
		if m.Reached {
			mp.ReachedAt = timestamppb.New(m.ReachedAt)
		}
		if !m.LastProgressAt.IsZero() {
			mp.LastProgressAt = timestamppb.New(m.LastProgressAt)
		}
		grace := def.Grace
		switch {
		case m.Reached:
			mp.State = "reached"
		case r.EvaluatedAt.After(m.TargetAt.Add(grace)):
			mp.State = "overdue"
		case r.EvaluatedAt.After(m.TargetAt):
			mp.State = "late"
		default:
			mp.State = "pending"
		}
		out.Milestones = append(out.Milestones, mp)
	}
	return out
}
