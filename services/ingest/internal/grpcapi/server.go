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
	if _, err := s.accept(ctx, []map[string]any{trackCall(req)}, nil, true); err != nil {
		return nil, err
	}
	return &ingestv1.TrackResponse{}, nil
}

// Identify takes one identify call.
func (s *Server) Identify(ctx context.Context, req *ingestv1.IdentifyRequest) (*ingestv1.IdentifyResponse, error) {
	if _, err := s.accept(ctx, []map[string]any{identifyCall(req)}, nil, true); err != nil {
		return nil, err
	}
	return &ingestv1.IdentifyResponse{}, nil
}

// Group takes one group call.
func (s *Server) Group(ctx context.Context, req *ingestv1.GroupRequest) (*ingestv1.GroupResponse, error) {
	if _, err := s.accept(ctx, []map[string]any{groupCall(req)}, nil, true); err != nil {
		return nil, err
	}
	return &ingestv1.GroupResponse{}, nil
}

// Batch takes up to 2,500 calls: the valid ones are stored, the invalid
// ones listed in the response.
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
	res, err := s.accept(ctx, calls, req.GetSentAt(), false)
	if err != nil {
		return nil, err
	}
	out := &ingestv1.BatchResponse{Accepted: uint32(len(res.Events))}
	for _, r := range res.Rejected {
		out.Rejected = append(out.Rejected, &ingestv1.RejectedCall{Index: int32(r.Index), Field: itemsField(r.Err.Field),
			Code: r.Err.Code, Message: r.Err.Msg})
	}
	return out, nil
}

// itemsField names a field as this API does: items[i] where the decoder
// says batch[i].
func itemsField(f string) string { return strings.Replace(f, "batch[", "items[", 1) }

// accept decodes and stores calls. A single call (Track, Identify, Group)
// that is invalid fails; a Batch stores its valid calls and returns the
// others in the result's Rejected, failing only if none is valid.
func (s *Server) accept(ctx context.Context, calls []map[string]any, sentAt *timestamppb.Timestamp, single bool) (*segment.Request, error) {
	p, err := tenancy.Caller(ctx)
	if err != nil {
		return nil, err
	}
	received := s.now()
	body := map[string]any{"batch": calls}
	if sentAt != nil {
		body["sentAt"] = sentAt.AsTime().UTC().Format(time.RFC3339Nano)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, badRequest("", "a *_json field is not valid JSON: "+err.Error())
	}
	// grpc-go has read the message already (up to grpc.max_recv_bytes); the
	// budget bounds how many are decoded and waiting on JetStream at once.
	res, err := s.intake.Admit(ctx, p.TenantID, int64(len(raw)))
	if errors.Is(err, intake.ErrOverloaded) {
		s.intake.Reject(ctx, "grpc", p.TenantID, "overloaded")
		return nil, retryable(codes.Unavailable, err.Error(), intake.OverloadRetryAfter)
	} else if err != nil {
		return nil, status.FromContextError(err).Err() // the client left while waiting
	}
	defer res.Release()
	req, err := segment.Decode("batch", raw, received, s.limits)
	var se *segment.Error
	if errors.As(err, &se) {
		s.intake.Reject(ctx, "grpc", p.TenantID, se.Code)
		return nil, badRequest(itemsField(se.Field), se.Msg)
	} else if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var refused []intake.CallRejection
	for _, r := range req.Rejected {
		refused = append(refused, intake.CallRejection{Code: r.Err.Code, Field: itemsField(r.Err.Field), Message: r.Err.Msg, Call: r.Call})
	}
	if len(req.Events) == 0 {
		first := req.Rejected[0].Err
		s.intake.Reject(ctx, "grpc", p.TenantID, first.Code)
		field := itemsField(first.Field)
		if single {
			// One call: name its fields bare, as its request does.
			return nil, badRequest(strings.TrimPrefix(field, "items[0]."), first.Msg)
		}
		s.intake.RejectCalls(ctx, "grpc", p.TenantID, refused)
		return nil, badRequest(field, fmt.Sprintf("none of the %d calls is valid; the first: %s", len(req.Rejected), first.Msg))
	}
	err = s.intake.Accept(ctx, "grpc", p.TenantID, "token:"+p.TokenID, req.Events, received)
	var rl *intake.RateLimitedError
	switch {
	case errors.As(err, &rl):
		s.intake.Reject(ctx, "grpc", p.TenantID, "rate_limited")
		return nil, retryable(codes.ResourceExhausted, rl.Error(), rl.RetryAfter)
	case err != nil:
		s.intake.Reject(ctx, "grpc", p.TenantID, "unavailable")
		return nil, retryable(codes.Unavailable, err.Error(), intake.RetryAfter)
	}
	s.intake.RejectCalls(ctx, "grpc", p.TenantID, refused)
	return req, nil
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
