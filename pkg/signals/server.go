package signals

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	signalsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/signals/v1"
)

// Server serves stickpoint.signals.v1 for the caller's tenant.
type Server struct {
	signalsv1.UnimplementedSignalsServiceServer
	db chstore.Store
}

// NewServer lists the signals recorded in db.
func NewServer(db chstore.Store) *Server { return &Server{db: db} }

// List lists signals, newest first.
func (s *Server) List(ctx context.Context, req *signalsv1.ListRequest) (*signalsv1.ListResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > 1000:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is not between 1 and 1000", limit)
	}
	sigs, err := List(ctx, s.db, tenant, Filter{AccountID: req.GetAccountId(), Kind: req.GetKind(), Limit: limit})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &signalsv1.ListResponse{Signals: sigs}, nil
}
