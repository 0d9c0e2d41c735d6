package grpcserver

import (
	"context"
	"errors"
	"strings"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/stickpoint/stickpoint/pkg/tenancy"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

// Authenticator resolves a bearer token to its principal (tenancy.Registry).
type Authenticator interface {
	Authenticate(token string) (tenancy.Principal, error)
}

// ErrorDomain is the domain of the ErrorInfo details Stickpoint returns.
const ErrorDomain = "stickpoint.dev"

// Services any caller may use without a token.
var publicServices = []string{"/grpc.health.v1.Health/", "/grpc.reflection."}

type authorizer struct {
	auth   Authenticator
	scopes sync.Map // full method -> authv1.Scope
}

func newAuthorizer(a Authenticator) *authorizer { return &authorizer{auth: a} }

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }

func (a *authorizer) authorize(ctx context.Context, method string) (context.Context, error) {
	for _, p := range publicServices {
		if strings.HasPrefix(method, p) {
			return ctx, nil
		}
	}
	scope, err := a.requiredScope(method)
	if err != nil {
		return nil, err
	}
	token, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	p, err := a.auth.Authenticate(token)
	if err != nil {
		reason := "TOKEN_UNKNOWN"
		switch {
		case errors.Is(err, tenancy.ErrBadToken):
			reason = "TOKEN_MALFORMED"
		case errors.Is(err, tenancy.ErrRevokedToken):
			reason = "TOKEN_REVOKED"
		}
		return nil, withInfo(codes.Unauthenticated, err.Error(), reason, nil)
	}
	if !p.Has(scope) {
		return nil, withInfo(codes.PermissionDenied,
			"this token lacks the "+tenancy.ScopeName(scope)+" scope that "+method+" needs",
			"SCOPE_MISSING", map[string]string{"required_scope": tenancy.ScopeName(scope)})
	}
	return tenancy.WithPrincipal(ctx, p), nil
}

// requiredScope reads the stickpoint.auth.v1.required_scope option of the
// method. A method without one is refused: access is opt-in.
func (a *authorizer) requiredScope(method string) (authv1.Scope, error) {
	if v, ok := a.scopes.Load(method); ok {
		return v.(authv1.Scope), nil
	}
	name := strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	md, ok := d.(protoreflect.MethodDescriptor)
	if err != nil || !ok {
		return 0, status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	scope, _ := proto.GetExtension(md.Options(), authv1.E_RequiredScope).(authv1.Scope)
	if scope == authv1.Scope_SCOPE_UNSPECIFIED {
		return 0, withInfo(codes.PermissionDenied, method+" declares no required scope, so no token may call it", "SCOPE_UNDECLARED", nil)
	}
	a.scopes.Store(method, scope)
	return scope, nil
}

func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", withInfo(codes.Unauthenticated, "missing bearer token: send the header `authorization: Bearer <api token>`", "TOKEN_MISSING", nil)
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", withInfo(codes.Unauthenticated, "malformed authorization header: want `Bearer <api token>`", "TOKEN_MALFORMED", nil)
	}
	return strings.TrimSpace(token), nil
}

func withInfo(code codes.Code, msg, reason string, meta map[string]string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// ErrorReason returns the ErrorInfo reason of a status error, or "".
func ErrorReason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}
