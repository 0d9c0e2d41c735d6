// Package grpcapi serves stickpoint.ingest.v1 for server-side producers.
// Each request is rendered as the Segment call it stands for and decoded by
// the same decoder as the HTTP API, so both front doors validate alike.
package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stickpoint/stickpoint/pkg/tenancy"
	ingestv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/ingest/v1"
	"github.com/stickpoint/stickpoint/services/ingest/internal/intake"
	"github.com/stickpoint/stickpoint/services/ingest/internal/segment"
)

// Server is the gRPC ingest API.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	limits segment.Limits
	intake *intake.Intake
	now    func() time.Time
}

// New returns the gRPC ingest API.
func New(limits segment.Limits, in *intake.Intake) *Server {
	return &Server{limits: limits, intake: in, now: time.Now}
}

// Track takes one track call.
func (s *Server) Track(ctx context.Context, req *ingestv1.TrackRequest) (*ingestv1.TrackResponse, error) {
	if _, err := s.accept(ctx, []map[string]any{trackCall(req)}, nil); err != nil {
		return nil, err
	}
	return &ingestv1.TrackResponse{}, nil
}

// Identify takes one identify call.
func (s *Server) Identify(ctx context.Context, req *ingestv1.IdentifyRequest) (*ingestv1.IdentifyResponse, error) {
	if _, err := s.accept(ctx, []map[string]any{identifyCall(req)}, nil); err != nil {
		return nil, err
	}
	return &ingestv1.IdentifyResponse{}, nil
}

// Group takes one group call.
func (s *Server) Group(ctx context.Context, req *ingestv1.GroupRequest) (*ingestv1.GroupResponse, error) {
	if _, err := s.accept(ctx, []map[string]any{groupCall(req)}, nil); err != nil {
		return nil, err
	}
	return &ingestv1.GroupResponse{}, nil
}

// Batch takes up to 2,500 calls, all or none.
func (s *Server) Batch(ctx context.Context, req *ingestv1.BatchRequest) (*ingestv1.BatchResponse, error) {
	calls := make([]map[string]any, 0, len(req.GetItems()))
	for i, item := range req.GetItems() {
		switch c := item.GetCall().(type) {
		case *ingestv1.BatchItem_Track:
			calls = append(calls, trackCall(c.Track))
		case *ingestv1.BatchItem_Identify:
			calls = append(calls, identifyCall(c.Identify))
		case *ingestv1.BatchItem_Group:
			calls = append(calls, groupCall(c.Group))
		default:
			return nil, badRequest(fmt.Sprintf("items[%d]", i), "an item must hold a track, identify or group call")
		}
	}
	n, err := s.accept(ctx, calls, req.GetSentAt())
	if err != nil {
		return nil, err
	}
	return &ingestv1.BatchResponse{Accepted: uint32(n)}, nil
}

func (s *Server) accept(ctx context.Context, calls []map[string]any, sentAt *timestamppb.Timestamp) (int, error) {
	p, ok := tenancy.PrincipalFrom(ctx)
	if !ok {
		return 0, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	received := s.now()
	body := map[string]any{"batch": calls}
	if sentAt != nil {
		body["sentAt"] = sentAt.AsTime().UTC().Format(time.RFC3339Nano)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return 0, badRequest("", "a *_json field is not valid JSON: "+err.Error())
	}
	// grpc-go has read the message already (up to grpc.max_recv_bytes); the
	// budget bounds how many are decoded and waiting on JetStream at once.
	res, err := s.intake.Admit(ctx, int64(len(raw)))
	if errors.Is(err, intake.ErrOverloaded) {
		s.intake.Reject(ctx, "grpc", p.TenantID, "overloaded")
		return 0, retryable(codes.Unavailable, err.Error(), intake.OverloadRetryAfter)
	} else if err != nil {
		return 0, status.FromContextError(err).Err() // the client left while waiting
	}
	defer res.Release()
	req, err := segment.Decode("batch", raw, received, s.limits)
	var se *segment.Error
	if errors.As(err, &se) {
		s.intake.Reject(ctx, "grpc", p.TenantID, se.Code)
		// Name fields as this API does: items[i] in a Batch, bare for one call.
		field := strings.Replace(se.Field, "batch[", "items[", 1)
		if sentAt == nil && len(calls) == 1 {
			field = strings.TrimPrefix(field, "items[0].")
		}
		return 0, badRequest(field, se.Msg)
	} else if err != nil {
		return 0, status.Error(codes.InvalidArgument, err.Error())
	}
	err = s.intake.Accept(ctx, "grpc", p.TenantID, "token:"+p.TokenID, req.Events, received)
	var rl *intake.RateLimitedError
	switch {
	case errors.As(err, &rl):
		s.intake.Reject(ctx, "grpc", p.TenantID, "rate_limited")
		return 0, retryable(codes.ResourceExhausted, rl.Error(), rl.RetryAfter)
	case err != nil:
		s.intake.Reject(ctx, "grpc", p.TenantID, "unavailable")
		return 0, retryable(codes.Unavailable, err.Error(), intake.RetryAfter)
	}
	return len(req.Events), nil
}

func badRequest(field, msg string) error {
	st := status.New(codes.InvalidArgument, msg)
	if field != "" {
		st = status.New(codes.InvalidArgument, field+": "+msg)
		if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}}); err == nil {
			st = d
		}
	}
	return st.Err()
}

func retryable(code codes.Code, msg string, after time.Duration) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(after)}); err == nil {
		st = d
	}
	return st.Err()
}

// common renders the fields every call has.
func common(typ string, c *ingestv1.Call) map[string]any {
	m := map[string]any{"type": typ}
	if c == nil {
		return m
	}
	put(m, "messageId", c.GetMessageId())
	put(m, "userId", c.GetUserId())
	put(m, "anonymousId", c.GetAnonymousId())
	if c.GetTimestamp() != nil {
		m["timestamp"] = c.GetTimestamp().AsTime().UTC().Format(time.RFC3339Nano)
	}
	putJSON(m, "context", c.GetContextJson())
	return m
}

func trackCall(r *ingestv1.TrackRequest) map[string]any {
	m := common("track", r.GetCall())
	put(m, "event", r.GetEvent())
	putJSON(m, "properties", r.GetPropertiesJson())
	return m
}

func identifyCall(r *ingestv1.IdentifyRequest) map[string]any {
	m := common("identify", r.GetCall())
	putJSON(m, "traits", r.GetTraitsJson())
	return m
}

func groupCall(r *ingestv1.GroupRequest) map[string]any {
	m := common("group", r.GetCall())
	put(m, "groupId", r.GetGroupId())
	putJSON(m, "traits", r.GetTraitsJson())
	return m
}

func put(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// putJSON keeps a *_json field as raw JSON, so numbers stay exact. Invalid
// JSON fails json.Marshal of the whole call, reported as InvalidArgument.
func putJSON(m map[string]any, k, v string) {
	if v != "" {
		m[k] = json.RawMessage(v)
	}
}
