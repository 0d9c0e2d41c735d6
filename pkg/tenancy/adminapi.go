package tenancy

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/admin/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

// AdminService serves stickpoint.admin.v1 over a Registry. The caller's
// tenant comes from its token (set by grpcserver's auth interceptor).
type AdminService struct {
	adminv1.UnimplementedAdminServiceServer
	reg *Registry
}

// NewAdminService returns the admin API over reg.
func NewAdminService(reg *Registry) *AdminService { return &AdminService{reg: reg} }

// Caller is the authenticated caller of a gRPC method, or an
// Unauthenticated status: every service's APIs take the tenant from it.
func Caller(ctx context.Context) (Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	return p, nil
}

// CallerTenant is the tenant of the caller (see Caller).
func CallerTenant(ctx context.Context) (string, error) {
	p, err := Caller(ctx)
	return p.TenantID, err
}

// toStatus maps tenancy errors to gRPC status codes, once, at the boundary.
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tenantPB(t Tenant) *adminv1.Tenant {
	return &adminv1.Tenant{Id: t.ID, Name: t.Name, CreateTime: ts(t.CreatedAt), OwnerTrait: t.OwnerTrait}
}

func (a *AdminService) sourcePB(s Source) *adminv1.Source {
	out := &adminv1.Source{Id: s.ID, Name: s.Name, CreateTime: ts(s.CreatedAt)}
	for _, k := range a.reg.WriteKeys(s.TenantID, s.ID) {
		out.WriteKeys = append(out.WriteKeys, a.writeKeyPB(k))
	}
	return out
}

func (a *AdminService) writeKeyPB(k WriteKey) *adminv1.WriteKey {
	return &adminv1.WriteKey{Key: k.Key, SourceId: k.SourceID, CreateTime: ts(k.CreatedAt),
		ExpireTime: ts(k.ExpiresAt), RevokeTime: ts(k.RevokedAt), Active: k.Active(a.reg.now())}
}

func tokenPB(t Token) *adminv1.Token {
	return &adminv1.Token{Id: t.ID, Name: t.Name, Scopes: t.Scopes, CreateTime: ts(t.CreatedAt),
		RevokeTime: ts(t.RevokedAt), Active: t.Active()}
}

func (a *AdminService) CreateTenant(ctx context.Context, req *adminv1.CreateTenantRequest) (*adminv1.CreateTenantResponse, error) {
	res, err := a.reg.CreateTenant(ctx, req.GetId(), req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.CreateTenantResponse{Tenant: tenantPB(res.Tenant), Source: a.sourcePB(res.Source), AdminToken: res.Secret}, nil
}

func (a *AdminService) ListTenants(context.Context, *adminv1.ListTenantsRequest) (*adminv1.ListTenantsResponse, error) {
	out := &adminv1.ListTenantsResponse{}
	for _, t := range a.reg.Tenants() {
		out.Tenants = append(out.Tenants, tenantPB(t))
	}
	return out, nil
}

func (a *AdminService) GetTenant(ctx context.Context, _ *adminv1.GetTenantRequest) (*adminv1.GetTenantResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := a.reg.Tenant(p.TenantID)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.GetTenantResponse{Tenant: tenantPB(t)}, nil
}

func (a *AdminService) UpdateTenant(ctx context.Context, req *adminv1.UpdateTenantRequest) (*adminv1.UpdateTenantResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := a.reg.UpdateTenant(ctx, p.TenantID, req.GetOwnerTrait())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.UpdateTenantResponse{Tenant: tenantPB(t)}, nil
}

func (a *AdminService) CreateSource(ctx context.Context, req *adminv1.CreateSourceRequest) (*adminv1.CreateSourceResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	s, _, err := a.reg.CreateSource(ctx, p.TenantID, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.CreateSourceResponse{Source: a.sourcePB(s)}, nil
}

func (a *AdminService) ListSources(ctx context.Context, _ *adminv1.ListSourcesRequest) (*adminv1.ListSourcesResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	out := &adminv1.ListSourcesResponse{}
	for _, s := range a.reg.Sources(p.TenantID) {
		out.Sources = append(out.Sources, a.sourcePB(s))
	}
	return out, nil
}

func (a *AdminService) RotateWriteKey(ctx context.Context, req *adminv1.RotateWriteKeyRequest) (*adminv1.RotateWriteKeyResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	k, err := a.reg.RotateWriteKey(ctx, p.TenantID, req.GetSourceId(), time.Duration(req.GetGracePeriodSeconds())*time.Second)
	if err != nil {
		return nil, toStatus(err)
	}
	s, err := a.reg.Source(p.TenantID, req.GetSourceId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RotateWriteKeyResponse{Source: a.sourcePB(s), WriteKey: a.writeKeyPB(k)}, nil
}

func (a *AdminService) RevokeWriteKey(ctx context.Context, req *adminv1.RevokeWriteKeyRequest) (*adminv1.RevokeWriteKeyResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	k, err := a.reg.RevokeWriteKey(ctx, p.TenantID, req.GetKey())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RevokeWriteKeyResponse{WriteKey: a.writeKeyPB(k)}, nil
}

func (a *AdminService) CreateToken(ctx context.Context, req *adminv1.CreateTokenRequest) (*adminv1.CreateTokenResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	// A tenant admin can't mint operator tokens: that would escape the tenant.
	for _, s := range req.GetScopes() {
		if s == authv1.Scope_SCOPE_OPERATOR && !p.Has(authv1.Scope_SCOPE_OPERATOR) {
			return nil, status.Error(codes.PermissionDenied, "only an operator token can create operator tokens")
		}
	}
	t, secret, err := a.reg.CreateToken(ctx, p.TenantID, req.GetName(), req.GetScopes())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.CreateTokenResponse{Token: tokenPB(t), Secret: secret}, nil
}

func (a *AdminService) ListTokens(ctx context.Context, _ *adminv1.ListTokensRequest) (*adminv1.ListTokensResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	out := &adminv1.ListTokensResponse{}
	for _, t := range a.reg.Tokens(p.TenantID) {
		out.Tokens = append(out.Tokens, tokenPB(t))
	}
	return out, nil
}

func (a *AdminService) RevokeToken(ctx context.Context, req *adminv1.RevokeTokenRequest) (*adminv1.RevokeTokenResponse, error) {
	p, err := Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := a.reg.RevokeToken(ctx, p.TenantID, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.RevokeTokenResponse{Token: tokenPB(t)}, nil
}
