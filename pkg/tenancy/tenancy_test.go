package tenancy_test

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/pkg/tenancy"
	"github.com/stickpoint/stickpoint/pkg/testutil"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

func TestMain(m *testing.M) { os.Exit(testutil.MainWithLeakCheck(m)) }

func openRegistry(t *testing.T, bus *natsjs.Bus) *tenancy.Registry {
	t.Helper()
	r, err := tenancy.Open(t.Context(), bus, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

func TestTenantKeysAndTokens(t *testing.T) {
	reg := openRegistry(t, testutil.NATS(t))
	ctx := t.Context()

	res, err := reg.CreateTenant(ctx, "acme", "Acme Inc")
	require.NoError(t, err)
	require.Equal(t, "acme", res.Tenant.ID)
	_, err = reg.CreateTenant(ctx, "acme", "again")
	require.ErrorIs(t, err, tenancy.ErrAlreadyExists)

	k, err := reg.ResolveWriteKey(res.WriteKey.Key)
	require.NoError(t, err)
	require.Equal(t, "acme", k.TenantID)
	require.Equal(t, res.Source.ID, k.SourceID)

	p, err := reg.Authenticate(res.Secret)
	require.NoError(t, err)
	require.Equal(t, "acme", p.TenantID)
	require.True(t, p.Has(authv1.Scope_SCOPE_READ), "admin includes read")
	require.False(t, p.Has(authv1.Scope_SCOPE_OPERATOR))

	_, err = reg.Authenticate(res.Secret + "x")
	require.ErrorIs(t, err, tenancy.ErrUnknownToken)
	_, err = reg.Authenticate("not-a-token")
	require.ErrorIs(t, err, tenancy.ErrBadToken)

	// Revocation holds at once.
	_, err = reg.RevokeToken(ctx, "acme", res.Token.ID)
	require.NoError(t, err)
	_, err = reg.Authenticate(res.Secret)
	require.ErrorIs(t, err, tenancy.ErrRevokedToken)
	_, err = reg.RevokeWriteKey(ctx, "acme", res.WriteKey.Key)
	require.NoError(t, err)
	_, err = reg.ResolveWriteKey(res.WriteKey.Key)
	require.ErrorIs(t, err, tenancy.ErrBadWriteKey)
}

func TestTenantsCannotTouchEachOther(t *testing.T) {
	reg := openRegistry(t, testutil.NATS(t))
	ctx := t.Context()
	a, err := reg.CreateTenant(ctx, "a", "")
	require.NoError(t, err)
	b, err := reg.CreateTenant(ctx, "b", "")
	require.NoError(t, err)

	_, err = reg.RevokeToken(ctx, "a", b.Token.ID)
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	_, err = reg.RevokeWriteKey(ctx, "a", b.WriteKey.Key)
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	_, err = reg.RotateWriteKey(ctx, "a", b.Source.ID, 0)
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	require.Len(t, reg.Tokens("a"), 1)
	require.Equal(t, a.Token.ID, reg.Tokens("a")[0].ID)
	_, err = reg.ResolveWriteKey(b.WriteKey.Key)
	require.NoError(t, err, "b's key still works")
}

func TestRotateWriteKey(t *testing.T) {
	reg := openRegistry(t, testutil.NATS(t))
	ctx := t.Context()
	res, err := reg.CreateTenant(ctx, "acme", "")
	require.NoError(t, err)

	k2, err := reg.RotateWriteKey(ctx, "acme", res.Source.ID, time.Hour)
	require.NoError(t, err)
	_, err = reg.ResolveWriteKey(res.WriteKey.Key)
	require.NoError(t, err, "the old key works during the grace period")
	old := reg.WriteKeys("acme", res.Source.ID)[1]
	require.WithinDuration(t, time.Now().Add(time.Hour), old.ExpiresAt, time.Minute)

	k3, err := reg.RotateWriteKey(ctx, "acme", res.Source.ID, 0)
	require.NoError(t, err)
	for _, k := range []string{res.WriteKey.Key, k2.Key} {
		_, err = reg.ResolveWriteKey(k)
		require.ErrorIs(t, err, tenancy.ErrBadWriteKey, "a rotation without grace retires every older key")
	}
	_, err = reg.ResolveWriteKey(k3.Key)
	require.NoError(t, err)
}

func TestRevocationReachesOtherProcesses(t *testing.T) {
	bus := testutil.NATS(t)
	a := openRegistry(t, bus)
	b := openRegistry(t, bus) // a second process's view of the same bucket
	res, err := a.CreateTenant(t.Context(), "acme", "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, err := b.Authenticate(res.Secret); return err == nil }, 5*time.Second, time.Millisecond)

	_, err = a.RevokeToken(t.Context(), "acme", res.Token.ID)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := b.Authenticate(res.Secret)
		return err != nil
	}, 5*time.Second, time.Millisecond)
}

func TestRecordsSurviveRestartAndSecretsAreHashed(t *testing.T) {
	dir := t.TempDir()
	cfg := natsjs.DefaultConfig()
	cfg.StoreDir = dir
	log := slog.New(slog.DiscardHandler)

	bus, err := natsjs.Connect(t.Context(), cfg, "first", log)
	require.NoError(t, err)
	reg, err := tenancy.Open(t.Context(), bus, log)
	require.NoError(t, err)
	res, err := reg.CreateTenant(t.Context(), "acme", "")
	require.NoError(t, err)
	reg.Close()
	require.NoError(t, bus.Drain(t.Context()))

	bus, err = natsjs.Connect(t.Context(), cfg, "second", log)
	require.NoError(t, err)
	defer bus.Close()
	reg, err = tenancy.Open(t.Context(), bus, log)
	require.NoError(t, err)
	defer reg.Close()
	p, err := reg.Authenticate(res.Secret)
	require.NoError(t, err)
	require.Equal(t, "acme", p.TenantID)
	_, err = reg.ResolveWriteKey(res.WriteKey.Key)
	require.NoError(t, err)

	kv, err := bus.JS.KeyValue(t.Context(), tenancy.Bucket)
	require.NoError(t, err)
	e, err := kv.Get(t.Context(), "token."+res.Token.ID)
	require.NoError(t, err)
	secret := res.Secret[strings.LastIndex(res.Secret, ".")+1:]
	require.NotContains(t, string(e.Value()), secret, "only a hash of the secret is stored")
}

func TestEnsureTenant(t *testing.T) {
	reg := openRegistry(t, testutil.NATS(t))
	k1, secret, err := reg.EnsureTenant(t.Context(), "demo", "Demo", authv1.Scope_SCOPE_ADMIN, authv1.Scope_SCOPE_OPERATOR)
	require.NoError(t, err)
	require.NotEmpty(t, secret)
	k2, secret2, err := reg.EnsureTenant(t.Context(), "demo", "Demo")
	require.NoError(t, err)
	require.Empty(t, secret2, "the token is shown only when created")
	require.Equal(t, k1.Key, k2.Key, "the same write key every start")
}

func TestValidation(t *testing.T) {
	reg := openRegistry(t, testutil.NATS(t))
	for _, id := range []string{"", "Acme", "a.b", "a b", "-x", strings.Repeat("a", 41), "a>b", "a*"} {
		_, err := reg.CreateTenant(t.Context(), id, "")
		require.ErrorIs(t, err, tenancy.ErrInvalid, "tenant id %q", id)
	}
	_, err := reg.CreateTenant(t.Context(), "ok", "")
	require.NoError(t, err)
	_, _, err = reg.CreateToken(t.Context(), "ok", "x", nil)
	require.ErrorIs(t, err, tenancy.ErrInvalid)
	_, _, err = reg.CreateToken(t.Context(), "ok", "x", []authv1.Scope{42})
	require.ErrorIs(t, err, tenancy.ErrInvalid)
	_, _, err = reg.CreateToken(t.Context(), "nobody", "x", []authv1.Scope{authv1.Scope_SCOPE_READ})
	require.ErrorIs(t, err, tenancy.ErrNotFound)
	_, err = tenancy.ParseScope("root")
	require.ErrorIs(t, err, tenancy.ErrInvalid)
	_, err = reg.RotateWriteKey(context.Background(), "ok", "src_missing", 0)
	require.ErrorIs(t, err, tenancy.ErrNotFound)
}

func TestUpdateTenantOwnerTrait(t *testing.T) {
	bus := testutil.NATS(t)
	reg := openRegistry(t, bus)
	_, err := reg.CreateTenant(t.Context(), "acme", "Acme")
	require.NoError(t, err)
	got, err := reg.UpdateTenant(t.Context(), "acme", "account_manager")
	require.NoError(t, err)
	require.Equal(t, "account_manager", got.OwnerTrait)
	// Another process sees it.
	other := openRegistry(t, bus)
	require.Eventually(t, func() bool {
		tt, err := other.Tenant("acme")
		return err == nil && tt.OwnerTrait == "account_manager" && tt.Name == "Acme"
	}, 5*time.Second, 10*time.Millisecond)
	_, err = reg.UpdateTenant(t.Context(), "acme", " spaced ")
	require.ErrorIs(t, err, tenancy.ErrInvalid)
	_, err = reg.UpdateTenant(t.Context(), "nobody", "x")
	require.ErrorIs(t, err, tenancy.ErrNotFound)
}
