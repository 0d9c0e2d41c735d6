package api

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	healthv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/health/v1"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
	"github.com/stickpoint/stickpoint/services/health/internal/model"
	"github.com/stickpoint/stickpoint/services/health/internal/models"
	"github.com/stickpoint/stickpoint/services/health/internal/score"
	"github.com/stickpoint/stickpoint/services/health/internal/scorer"
)

// Health serves stickpoint.health.v1.
type Health struct {
	healthv1.UnimplementedHealthServiceServer
	db     chstore.Store
	models *models.Store
	scorer *scorer.Scorer
	// rescoreAll queues a rescore of every account of a tenant.
	rescoreAll func(tenant, reason string)
}

// NewHealth serves the health API.
func NewHealth(db chstore.Store, ms *models.Store, sc *scorer.Scorer, rescoreAll func(tenant, reason string)) *Health {
	return &Health{db: db, models: ms, scorer: sc, rescoreAll: rescoreAll}
}

// GetModel returns the model in force.
func (s *Health) GetModel(ctx context.Context, _ *healthv1.GetModelRequest) (*healthv1.GetModelResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.models.Get(ctx, tenant)
	if err != nil {
		return nil, unavailable(err)
	}
	out := &healthv1.GetModelResponse{Source: st.Source, Version: st.Version}
	if !st.UpdatedAt.IsZero() {
		out.UpdatedAt = timestamppb.New(st.UpdatedAt)
	}
	return out, nil
}

// PutModel checks and stores a model, then rescores every account.
func (s *Health) PutModel(ctx context.Context, req *healthv1.PutModelRequest) (*healthv1.PutModelResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, unchanged, err := s.models.Put(ctx, tenant, []byte(req.GetSource()))
	var bad *specfile.Error
	switch {
	case errors.As(err, &bad):
		return nil, status.Error(codes.InvalidArgument, bad.Error())
	case err != nil:
		return nil, unavailable(err)
	}
	if !unchanged {
		s.rescoreAll(tenant, "model version "+time.Now().UTC().Format(time.RFC3339))
	}
	return &healthv1.PutModelResponse{Version: st.Version, Unchanged: unchanged}, nil
}

// History lists an account's score changes, newest first.
func (s *Health) History(ctx context.Context, req *healthv1.HistoryRequest) (*healthv1.HistoryResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	limit := req.GetLimit()
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is not between 1 and 1000", limit)
	}
	rows, err := s.db.Query(ctx, `SELECT at, score, band, intent_score, components FROM health_history FINAL
		WHERE tenant_id = ? AND account_id = ? ORDER BY at DESC LIMIT ?`, tenant, req.GetAccountId(), int(limit))
	if err != nil {
		return nil, unavailable(err)
	}
	out := &healthv1.HistoryResponse{}
	for rows.Next() {
		var at time.Time
		var sc uint64
		var band, comps string
		var intent float64
		if err := rows.Scan(&at, &sc, &band, &intent, &comps); err != nil {
			return nil, unavailable(err)
		}
		var cs []score.Component
		_ = json.Unmarshal([]byte(comps), &cs) // written by the scorer
		out.Entries = append(out.Entries, &healthv1.HistoryEntry{At: timestamppb.New(at), Score: int32(sc), Band: band, CancelIntent: intent, Components: scorer.Components(cs)})
	}
	return out, nil
}

// PutSentiment stores a CSM's sentiment and rescores the account.
func (s *Health) PutSentiment(ctx context.Context, req *healthv1.PutSentimentRequest) (*healthv1.PutSentimentResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case req.GetAccountId() == "":
		return nil, status.Error(codes.InvalidArgument, "account_id: required")
	case req.GetScore() < 0 || req.GetScore() > 100:
		return nil, status.Errorf(codes.InvalidArgument, "score %d is not between 0 and 100", req.GetScore())
	case req.GetExpiresInSeconds() < 0:
		return nil, status.Error(codes.InvalidArgument, "expires_in_seconds must not be negative")
	case len(req.GetNote()) > 2000:
		return nil, status.Error(codes.InvalidArgument, "note: longer than 2000 bytes")
	}
	author := req.GetAuthor()
	if author == "" {
		if c, err := tenancy.Caller(ctx); err == nil {
			author = "token " + c.TokenID
		}
	}
	expires := time.Duration(req.GetExpiresInSeconds()) * time.Second
	if expires == 0 {
		expires = 30 * specfile.Day
	}
	now := time.Now().UTC()
	sent := score.Sentiment{Score: int(req.GetScore()), Note: req.GetNote(), Author: author, SetAt: now, ExpiresAt: now.Add(expires)}
	if err := scorer.PutSentiment(ctx, s.db, tenant, req.GetAccountId(), sent); err != nil {
		return nil, unavailable(err)
	}
	if _, err := s.scorer.Score(ctx, tenant, []string{req.GetAccountId()}, scorer.Span{}, "sentiment"); err != nil {
		return nil, unavailable(err)
	}
	return &healthv1.PutSentimentResponse{ExpiresAt: timestamppb.New(sent.ExpiresAt)}, nil
}

// ChurnReport says how many churns were foreseen, and how early.
func (s *Health) ChurnReport(ctx context.Context, req *healthv1.ChurnReportRequest) (*healthv1.ChurnReportResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	since := time.Duration(req.GetSinceSeconds()) * time.Second
	if since <= 0 {
		since = 90 * specfile.Day
	}
	rows, err := s.db.Query(ctx, `SELECT account_id, churned_at, source, reason, fit, foreseen, first_risk_kind, first_risk_at FROM churn_records FINAL
		WHERE tenant_id = ? AND churned_at >= ? ORDER BY churned_at DESC`, tenant, time.Now().Add(-since).UTC())
	if err != nil {
		return nil, unavailable(err)
	}
	out := &healthv1.ChurnReportResponse{ByFit: map[string]*healthv1.ChurnStats{}}
	leads := map[string][]int64{}
	add := func(key string, c *signalsv1.ChurnEvidence) {
		st := out.ByFit[key]
		if key == "" {
			st = out.Overall
		}
		st.Churns++
		if c.GetForeseen() {
			st.Foreseen++
			leads[key] = append(leads[key], c.GetLeadTimeSeconds())
		}
	}
	out.Overall = &healthv1.ChurnStats{}
	for _, f := range model.Fits {
		out.ByFit[f] = &healthv1.ChurnStats{}
	}
	type churn struct {
		id string
		c  *scorer.Churn
	}
	var churns []churn
	byAccount := map[string][]*scorer.Churn{}
	for rows.Next() {
		var id string
		c := &scorer.Churn{}
		var foreseen uint64
		if err := rows.Scan(&id, &c.At, &c.Source, &c.Reason, &c.Fit, &foreseen, &c.FirstRiskKind, &c.FirstRiskAt); err != nil {
			return nil, unavailable(err)
		}
		c.Foreseen = foreseen == 1
		churns = append(churns, churn{id, c})
		byAccount[id] = append(byAccount[id], c)
	}
	// A risk signal stored after the churn was recorded can precede it.
	if err := scorer.ForeseeFromSignals(ctx, s.db, tenant, byAccount); err != nil {
		return nil, unavailable(err)
	}
	for _, ch := range churns {
		id, c := ch.id, *ch.c
		rec := &healthv1.ChurnRecord{AccountId: id, Churn: scorer.ChurnEvidence(&c)}
		out.Records = append(out.Records, rec)
		add("", rec.Churn)
		if out.ByFit[c.Fit] != nil {
			add(c.Fit, rec.Churn)
		}
		if c.Fit == model.FitGood && !c.Foreseen {
			out.Worst = append(out.Worst, rec)
		}
	}
	for key, st := range out.ByFit {
		finish(st, leads[key])
	}
	finish(out.Overall, leads[""])
	return out, nil
}

func finish(st *healthv1.ChurnStats, leads []int64) {
	if st.Churns > 0 {
		st.ForeseenShare = float64(st.Foreseen) / float64(st.Churns)
	}
	if len(leads) > 0 {
		sort.Slice(leads, func(i, j int) bool { return leads[i] < leads[j] })
		if n := len(leads); n%2 == 1 {
			st.MedianLeadTimeSeconds = leads[n/2]
		} else {
			st.MedianLeadTimeSeconds = (leads[n/2-1] + leads[n/2]) / 2
		}
	}
}
