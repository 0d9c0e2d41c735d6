// Package api serves stickpoint.alerts.v1: alerts, their lifecycle, the
// live stream of their changes, and the alerting configuration.
package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/specfile"
	"github.com/stickpoint/stickpoint/pkg/specstore"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
	"github.com/stickpoint/stickpoint/services/alerting/internal/store"
)

// Alerts serves the API.
type Alerts struct {
	alertsv1.UnimplementedAlertsServiceServer
	bus     *natsjs.Bus
	alerts  *store.Store
	configs *specstore.Store[config.Config]
	// Now is the clock of lifecycle steps.
	Now func() time.Time
}

// New serves alerts from the stores.
func New(bus *natsjs.Bus, alerts *store.Store, configs *specstore.Store[config.Config]) *Alerts {
	return &Alerts{bus: bus, alerts: alerts, configs: configs, Now: time.Now}
}

// List lists the caller's alerts, most recently updated first.
func (s *Alerts) List(ctx context.Context, req *alertsv1.ListRequest) (*alertsv1.ListResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	size := req.GetPageSize()
	if size == 0 {
		size = 50
	}
	limit, after, err := grpcserver.Page(size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var all []*alertsv1.Alert
	err = s.alerts.Each(ctx, tenant, func(rec *lifecycle.Record) error {
		a := rec.Alert
		switch {
		case req.GetState() != alertsv1.State_STATE_UNSPECIFIED && a.GetState() != req.GetState(),
			req.GetKind() != "" && a.GetKind() != req.GetKind(),
			req.GetSeverity() != alertsv1.Severity_SEVERITY_UNSPECIFIED && a.GetSeverity() != req.GetSeverity(),
			req.GetOwner() != "" && !strings.EqualFold(a.GetOwner(), req.GetOwner()),
			req.GetAccountId() != "" && a.GetAccountId() != req.GetAccountId():
			return nil
		}
		all = append(all, summary(a))
		return nil
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	// Newest first; the key is the update time (inverted) and the id, so a
	// page token is the sort key of the last alert sent.
	sortKey := func(a *alertsv1.Alert) string {
		return fmt.Sprintf("%020d/%s", int64(1<<62)-a.GetUpdatedAt().AsTime().UnixNano(), a.GetId())
	}
	slices.SortFunc(all, func(x, y *alertsv1.Alert) int { return strings.Compare(sortKey(x), sortKey(y)) })
	out := &alertsv1.ListResponse{}
	for _, a := range all {
		if after != "" && sortKey(a) <= after {
			continue
		}
		if len(out.Alerts) == limit {
			out.NextPageToken = grpcserver.PageToken(sortKey(out.Alerts[len(out.Alerts)-1]))
			break
		}
		out.Alerts = append(out.Alerts, a)
	}
	return out, nil
}

// summary is an alert without its logs, for lists and streams.
func summary(a *alertsv1.Alert) *alertsv1.Alert {
	c := proto.Clone(a).(*alertsv1.Alert)
	c.Steps, c.Deliveries = nil, nil
	return c
}

// Get returns one alert, whole.
func (s *Alerts) Get(ctx context.Context, req *alertsv1.GetRequest) (*alertsv1.GetResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.alerts.Get(ctx, tenant, req.GetId())
	if err != nil {
		return nil, toStatus(err, req.GetId())
	}
	return &alertsv1.GetResponse{Alert: rec.Alert}, nil
}

// Acknowledge acknowledges an open alert.
func (s *Alerts) Acknowledge(ctx context.Context, req *alertsv1.AcknowledgeRequest) (*alertsv1.AcknowledgeResponse, error) {
	a, err := s.step(ctx, req.GetId(), req.GetBy(), func(rec *lifecycle.Record, by string) (*lifecycle.Record, error) {
		return lifecycle.Acknowledge(rec, by, req.GetNote(), s.Now())
	})
	return &alertsv1.AcknowledgeResponse{Alert: a}, err
}

// Resolve resolves an alert.
func (s *Alerts) Resolve(ctx context.Context, req *alertsv1.ResolveRequest) (*alertsv1.ResolveResponse, error) {
	a, err := s.step(ctx, req.GetId(), req.GetBy(), func(rec *lifecycle.Record, by string) (*lifecycle.Record, error) {
		return lifecycle.Resolve(rec, by, req.GetNote(), s.Now())
	})
	return &alertsv1.ResolveResponse{Alert: a}, err
}

func (s *Alerts) step(ctx context.Context, id, by string, f func(*lifecycle.Record, string) (*lifecycle.Record, error)) (*alertsv1.Alert, error) {
	p, err := tenancy.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if by == "" {
		by = "token:" + p.TokenID
	}
	if len(by) > 200 {
		return nil, status.Error(codes.InvalidArgument, "by: over 200 characters")
	}
	rec, err := s.alerts.Update(ctx, p.TenantID, id, func(cur *lifecycle.Record) (*lifecycle.Record, error) {
		if cur == nil {
			return nil, store.ErrNotFound
		}
		return f(cur, by)
	})
	if err != nil {
		return nil, toStatus(err, id)
	}
	if err := s.alerts.Flush(ctx, rec); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return rec.Alert, nil
}

func toStatus(err error, id string) error {
	var bad lifecycle.ErrState
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "no alert %q", id)
	case errors.As(err, &bad):
		return status.Error(codes.FailedPrecondition, bad.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// Watch streams the caller's alert changes from after the cursor.
func (s *Alerts) Watch(req *alertsv1.WatchRequest, stream grpc.ServerStreamingServer[alertsv1.WatchResponse]) error {
	ctx := stream.Context()
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsjs.AlertSubject(tenant)}, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case req.GetCursor() != "":
		seq, err := strconv.ParseUint(req.GetCursor(), 10, 64)
		if err != nil {
			return status.Error(codes.InvalidArgument, "cursor is not one this API gave")
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	case req.GetReplaySeconds() > 0:
		start := s.Now().Add(-time.Duration(req.GetReplaySeconds()) * time.Second)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := s.bus.JS.OrderedConsumer(ctx, natsjs.AlertsStream, cfg)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	// Fetch in short rounds, so a client that goes away ends the stream.
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return status.Error(codes.Unavailable, err.Error())
		}
		for m := range batch.Messages() {
			a := &alertsv1.Alert{}
			if err := proto.Unmarshal(m.Data(), a); err != nil {
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			resp := &alertsv1.WatchResponse{Cursor: strconv.FormatUint(md.Sequence.Stream, 10), Change: m.Headers().Get(store.HeaderChange), Alert: a}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return status.Error(codes.Unavailable, err.Error())
		}
	}
	return nil
}

// GetConfig returns the configuration in force, secrets redacted.
func (s *Alerts) GetConfig(ctx context.Context, _ *alertsv1.GetConfigRequest) (*alertsv1.GetConfigResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.configs.Get(ctx, tenant)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &alertsv1.GetConfigResponse{Source: config.Redact(st.Source), Version: st.Version}
	if !st.UpdatedAt.IsZero() {
		out.UpdatedAt = timestamppb.New(st.UpdatedAt)
	}
	return out, nil
}

// PutConfig checks and stores a configuration.
func (s *Alerts) PutConfig(ctx context.Context, req *alertsv1.PutConfigRequest) (*alertsv1.PutConfigResponse, error) {
	tenant, err := tenancy.CallerTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, unchanged, err := s.configs.Put(ctx, tenant, []byte(req.GetSource()))
	var bad *specfile.Error
	switch {
	case errors.As(err, &bad):
		return nil, status.Error(codes.InvalidArgument, bad.Error())
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &alertsv1.PutConfigResponse{Version: st.Version, Unchanged: unchanged}, nil
}
