package api

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	accountsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/accounts/v1"
	"github.com/stickpoint/stickpoint/services/milestones/internal/evaluator"
	"github.com/stickpoint/stickpoint/services/milestones/internal/progress"
)

// Accounts serves stickpoint.accounts.v1: an account is known once the
// evaluator has seen one of its events.
type Accounts struct {
	accountsv1.UnimplementedAccountsServiceServer
	db     chstore.Store
	traits *accounts.Reader
	// ownerTrait is the trait naming a tenant's accounts' owner.
	ownerTrait func(tenant string) string
}

// NewAccounts serves the accounts API; ownerTrait names, per tenant, the
// trait holding an account's owner.
func NewAccounts(db chstore.Store, ownerTrait func(tenant string) string) *Accounts {
	return &Accounts{db: db, traits: accounts.NewReader(db), ownerTrait: ownerTrait}
}

// Get returns one account.
func (s *Accounts) Get(ctx context.Context, req *accountsv1.GetRequest) (*accountsv1.GetResponse, error) {
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
	traits, err := s.traits.Traits(ctx, tenant, []string{req.GetAccountId()})
	if err != nil {
		return nil, unavailable(err)
	}
	acts, err := evaluator.Activity(ctx, s.db, tenant, []string{req.GetAccountId()})
	if err != nil {
		return nil, unavailable(err)
	}
	return &accountsv1.GetResponse{Account: accountProto(rows[0], traits[req.GetAccountId()], s.ownerTrait(tenant), acts[req.GetAccountId()])}, nil
}

// List lists accounts by id, filtered, a page at a time.
func (s *Accounts) List(ctx context.Context, req *accountsv1.ListRequest) (*accountsv1.ListResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	if st := req.GetOnboardingStatus(); st != "" && !slices.Contains(progress.Statuses, st) {
		return nil, status.Errorf(codes.InvalidArgument, "onboarding_status %q is not one of %v", st, progress.Statuses)
	}
	wantTraits := map[string]string{}
	for _, kv := range req.GetTraitEquals() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, status.Errorf(codes.InvalidArgument, "trait_equals %q is not key=value", kv)
		}
		wantTraits[k] = v
	}
	size, after, err := paging(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	extra, args := "AND account_id > ?", []any{after}
	if req.GetOnboardingStatus() != "" {
		extra += " AND status = ?"
		args = append(args, req.GetOnboardingStatus())
	}
	owner := s.ownerTrait(tenant)
	if req.GetOwner() != "" {
		wantTraits[owner] = req.GetOwner()
	}
	out := &accountsv1.ListResponse{}
	// Trait filters are applied to the merged traits, so pages are read
	// until one is full or the accounts end.
	for {
		rows, err := evaluator.ReadRows(ctx, s.db, tenant, nil, extra+" ORDER BY account_id LIMIT ?", append(args, size)...)
		if err != nil {
			return nil, unavailable(err)
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.AccountID
		}
		traits, err := s.traits.Traits(ctx, tenant, ids)
		if err != nil {
			return nil, unavailable(err)
		}
		acts, err := evaluator.Activity(ctx, s.db, tenant, ids)
		if err != nil {
			return nil, unavailable(err)
		}
		for _, r := range rows {
			if !traitsMatch(traits[r.AccountID], wantTraits) {
				continue
			}
			out.Accounts = append(out.Accounts, accountProto(r, traits[r.AccountID], owner, acts[r.AccountID]))
			if len(out.Accounts) == size {
				out.NextPageToken = pageToken(r.AccountID)
				return out, nil
			}
		}
		if len(rows) < size {
			return out, nil
		}
		args[0] = rows[len(rows)-1].AccountID
	}
}

func traitsMatch(tr accounts.Traits, want map[string]string) bool {
	for k, v := range want {
		if _, ok := tr[k]; !ok || tr.Text(k) != v {
			return false
		}
	}
	return true
}

func accountProto(r evaluator.Row, tr accounts.Traits, ownerTrait string, activity [2]time.Time) *accountsv1.Account {
	out := &accountsv1.Account{Id: r.AccountID, Start: timestamppb.New(r.Start), Owner: tr.Text(ownerTrait),
		FirstEventAt: timestamppb.New(activity[0]), LastEventAt: timestamppb.New(activity[1]),
		OnboardingStatus: r.Status, JourneyId: r.JourneyID}
	fields := map[string]any{}
	for k, raw := range tr {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			fields[k] = v
		}
	}
	if st, err := structpb.NewStruct(fields); err == nil {
		out.Traits = st
	}
	return out
}
