// Package eventsapi serves stickpoint.events.v1 over the ingest store.
package eventsapi

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	eventsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/events/v1"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
)

// Server is the events API. The tenant comes from the caller's token.
type Server struct {
	eventsv1.UnimplementedEventsServiceServer
	store *store.Store
}

// New returns the events API over s.
func New(s *store.Store) *Server { return &Server{store: s} }

// Count counts distinct events.
func (s *Server) Count(ctx context.Context, req *eventsv1.CountRequest) (*eventsv1.CountResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetType() != "" && !slices.Contains(events.Types, req.GetType()) {
		return nil, status.Errorf(codes.InvalidArgument, "type %q is not one of %v", req.GetType(), events.Types)
	}
	f := store.Filter{AccountID: req.GetAccountId(), Type: req.GetType(), Name: req.GetEvent()}
	if req.GetStartTime() != nil {
		f.From = req.GetStartTime().AsTime()
	}
	if req.GetEndTime() != nil {
		f.To = req.GetEndTime().AsTime()
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return nil, status.Error(codes.InvalidArgument, "start_time must be before end_time")
	}
	n, err := s.store.Count(ctx, tenant, f)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &eventsv1.CountResponse{Count: n}, nil
}

// Recent lists the latest events.
func (s *Server) Recent(ctx context.Context, req *eventsv1.RecentRequest) (*eventsv1.RecentResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = 20
	case limit < 0 || limit > 1000:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is not between 1 and 1000", limit)
	}
	evs, err := s.store.Recent(ctx, tenant, req.GetAccountId(), limit)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &eventsv1.RecentResponse{}
	for _, e := range evs {
		out.Events = append(out.Events, &eventsv1.Event{
			MessageId: e.MessageID, Type: e.Type, Name: e.Name, UserId: e.UserID, AnonymousId: e.AnonymousID,
			AccountId: e.AccountID, SourceId: e.SourceID, Timestamp: timestamppb.New(e.Timestamp),
			ReceiveTime: timestamppb.New(e.ReceivedAt), PropertiesJson: string(e.Properties),
			TraitsJson: string(e.Traits), ContextJson: string(e.Context),
		})
	}
	return out, nil
}

// Stats says what ingest accepted and refused.
func (s *Server) Stats(ctx context.Context, req *eventsv1.StatsRequest) (*eventsv1.StatsResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	from, to := timeRange(req.GetStartTime(), req.GetEndTime())
	st, err := s.store.Stats(ctx, tenant, from, to)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &eventsv1.StatsResponse{AcceptedEvents: st.Accepted, RejectedCalls: st.RejectedCalls, UnattributedEvents: st.Unattributed}
	for _, r := range st.Rejections {
		out.Rejections = append(out.Rejections, &eventsv1.Rejection{Api: r.API, Reason: r.Reason, Requests: r.Requests})
	}
	return out, nil
}

// Warnings lists the calls refused one by one, by kind.
func (s *Server) Warnings(ctx context.Context, req *eventsv1.WarningsRequest) (*eventsv1.WarningsResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	from, to := timeRange(req.GetStartTime(), req.GetEndTime())
	ws, err := s.store.Warnings(ctx, tenant, from, to)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &eventsv1.WarningsResponse{}
	for _, w := range ws {
		out.Warnings = append(out.Warnings, &eventsv1.Warning{Api: w.API, Code: w.Code, Field: w.Field, Calls: w.Calls,
			LastSeen: timestamppb.New(w.LastSeen), ExampleMessage: w.ExampleMessage, ExampleCall: w.ExampleCall})
	}
	return out, nil
}

// timeRange reads a request's optional bounds; unset is the zero time,
// which the store takes as unbounded.
func timeRange(start, end *timestamppb.Timestamp) (from, to time.Time) {
	if start != nil {
		from = start.AsTime()
	}
	if end != nil {
		to = end.AsTime()
	}
	return from, to
}
