package grpcserver_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/stickpoint/stickpoint/pkg/grpcserver"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	adminv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/admin/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

func TestMain(m *testing.M) { os.Exit(testutil.MainWithLeakCheck(m)) }

type fixture struct {
	reg    *tenancy.Registry
	client adminv1.AdminServiceClient
	conn   *grpc.ClientConn
}

func start(t *testing.T, cfg grpcserver.Config) *fixture {
	t.Helper()
	reg, err := tenancy.Open(t.Context(), testutil.NATS(t), testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(reg.Close)
	srv, err := grpcserver.New(cfg, reg, testutil.Logger(t))
	require.NoError(t, err)
	srv.Register(&adminv1.AdminService_ServiceDesc, tenancy.NewAdminService(reg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })

	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{reg: reg, client: adminv1.NewAdminServiceClient(conn), conn: conn}
}

func testConfig() grpcserver.Config {
	cfg := grpcserver.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	return cfg
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func requireCode(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "error: %v", err)
	if reason != "" {
		require.Equal(t, reason, grpcserver.ErrorReason(err), "error: %v", err)
	}
}

func TestAuth(t *testing.T) {
	f := start(t, testConfig())
	ctx := t.Context()
	acme, err := f.reg.CreateTenant(ctx, "acme", "")
	require.NoError(t, err)
	_, readSecret, err := f.reg.CreateToken(ctx, "acme", "reader", []authv1.Scope{authv1.Scope_SCOPE_READ})
	require.NoError(t, err)

	t.Run("missing token", func(t *testing.T) {
		_, err := f.client.ListTokens(ctx, &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.Unauthenticated, "TOKEN_MISSING")
	})
	t.Run("malformed header", func(t *testing.T) {
		md := metadata.AppendToOutgoingContext(ctx, "authorization", "Basic abc")
		_, err := f.client.ListTokens(md, &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.Unauthenticated, "TOKEN_MALFORMED")
	})
	t.Run("malformed token", func(t *testing.T) {
		_, err := f.client.ListTokens(withToken(ctx, "hunter2"), &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.Unauthenticated, "TOKEN_MALFORMED")
	})
	t.Run("unknown token", func(t *testing.T) {
		_, err := f.client.ListTokens(withToken(ctx, "spt.nope.nope"), &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.Unauthenticated, "TOKEN_UNKNOWN")
	})
	t.Run("wrong scope", func(t *testing.T) {
		_, err := f.client.ListTokens(withToken(ctx, readSecret), &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.PermissionDenied, "SCOPE_MISSING")
		got, err := f.client.GetTenant(withToken(ctx, readSecret), &adminv1.GetTenantRequest{})
		require.NoError(t, err, "read is enough for GetTenant")
		require.Equal(t, "acme", got.GetTenant().GetId())
	})
	t.Run("tenant admin is not an operator", func(t *testing.T) {
		_, err := f.client.CreateTenant(withToken(ctx, acme.Secret), &adminv1.CreateTenantRequest{Id: "evil"})
		requireCode(t, err, codes.PermissionDenied, "SCOPE_MISSING")
		_, err = f.client.CreateToken(withToken(ctx, acme.Secret), &adminv1.CreateTokenRequest{Name: "x", Scopes: []authv1.Scope{authv1.Scope_SCOPE_OPERATOR}})
		requireCode(t, err, codes.PermissionDenied, "")
	})
	t.Run("revoked token stops at once", func(t *testing.T) {
		created, err := f.client.CreateToken(withToken(ctx, acme.Secret), &adminv1.CreateTokenRequest{Name: "temp", Scopes: []authv1.Scope{authv1.Scope_SCOPE_ADMIN}})
		require.NoError(t, err)
		_, err = f.client.ListTokens(withToken(ctx, created.GetSecret()), &adminv1.ListTokensRequest{})
		require.NoError(t, err)
		_, err = f.client.RevokeToken(withToken(ctx, acme.Secret), &adminv1.RevokeTokenRequest{Id: created.GetToken().GetId()})
		require.NoError(t, err)
		_, err = f.client.ListTokens(withToken(ctx, created.GetSecret()), &adminv1.ListTokensRequest{})
		requireCode(t, err, codes.Unauthenticated, "TOKEN_REVOKED")
	})
	t.Run("health and reflection need no token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "stickpoint.admin.v1.AdminService"})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	})
}

func TestTokenOfTenantAOnTenantBObjects(t *testing.T) {
	f := start(t, testConfig())
	ctx := t.Context()
	a, err := f.reg.CreateTenant(ctx, "a", "")
	require.NoError(t, err)
	b, err := f.reg.CreateTenant(ctx, "b", "")
	require.NoError(t, err)
	asA := withToken(ctx, a.Secret)

	_, err = f.client.RevokeToken(asA, &adminv1.RevokeTokenRequest{Id: b.Token.ID})
	requireCode(t, err, codes.NotFound, "")
	_, err = f.client.RevokeWriteKey(asA, &adminv1.RevokeWriteKeyRequest{Key: b.WriteKey.Key})
	requireCode(t, err, codes.NotFound, "")
	_, err = f.client.RotateWriteKey(asA, &adminv1.RotateWriteKeyRequest{SourceId: b.Source.ID})
	requireCode(t, err, codes.NotFound, "")

	srcs, err := f.client.ListSources(asA, &adminv1.ListSourcesRequest{})
	require.NoError(t, err)
	require.Len(t, srcs.GetSources(), 1)
	require.Equal(t, a.WriteKey.Key, srcs.GetSources()[0].GetWriteKeys()[0].GetKey())
	for _, s := range srcs.GetSources() {
		for _, k := range s.GetWriteKeys() {
			require.NotEqual(t, b.WriteKey.Key, k.GetKey())
		}
	}
	// b is untouched.
	_, err = f.reg.Authenticate(b.Secret)
	require.NoError(t, err)
}

func TestOperatorCreatesTenants(t *testing.T) {
	f := start(t, testConfig())
	ctx := t.Context()
	_, opSecret, err := f.reg.EnsureTenant(ctx, "ops", "", authv1.Scope_SCOPE_ADMIN, authv1.Scope_SCOPE_OPERATOR)
	require.NoError(t, err)
	resp, err := f.client.CreateTenant(withToken(ctx, opSecret), &adminv1.CreateTenantRequest{Id: "newco", Name: "New Co"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(resp.GetAdminToken(), "spt."))
	require.Len(t, resp.GetSource().GetWriteKeys(), 1)

	_, err = f.client.CreateTenant(withToken(ctx, opSecret), &adminv1.CreateTenantRequest{Id: "newco"})
	requireCode(t, err, codes.AlreadyExists, "")
	_, err = f.client.CreateTenant(withToken(ctx, opSecret), &adminv1.CreateTenantRequest{Id: "Bad Id"})
	requireCode(t, err, codes.InvalidArgument, "")

	got, err := f.client.GetTenant(withToken(ctx, resp.GetAdminToken()), &adminv1.GetTenantRequest{})
	require.NoError(t, err)
	require.Equal(t, "New Co", got.GetTenant().GetName())
}

func TestOversizedMessage(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRecvBytes = 2048
	f := start(t, cfg)
	res, err := f.reg.CreateTenant(t.Context(), "acme", "")
	require.NoError(t, err)
	_, err = f.client.CreateSource(withToken(t.Context(), res.Secret), &adminv1.CreateSourceRequest{Name: strings.Repeat("x", 4096)})
	requireCode(t, err, codes.ResourceExhausted, "")
}

func TestConfigValidate(t *testing.T) {
	cfg := grpcserver.DefaultConfig()
	require.NoError(t, cfg.Validate())
	cfg.Addr = "nohost"
	require.ErrorContains(t, cfg.Validate(), "grpc.addr")
	cfg = grpcserver.DefaultConfig()
	cfg.MaxRecvBytes = 1
	require.ErrorContains(t, cfg.Validate(), "grpc.max_recv_bytes")
}
