// Package tenancy holds tenants, their sources and write keys, and API
// tokens, and answers the two questions every request asks: which tenant
// does this write key belong to, and who is this bearer token.
//
// Records live in the NATS KV bucket "stickpoint_tenancy" rather than in
// ClickHouse: they are small, changed one at a time and must read back at
// once (ClickHouse updates are asynchronous mutations and have no
// compare-and-set), and a KV watch pushes every change, a revocation
// included, to every process within milliseconds. Each process serves
// lookups from an in-memory copy fed by that watch.
package tenancy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

// Errors callers tell apart; the gRPC boundary maps them to status codes.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid argument")
	ErrBadToken      = errors.New("malformed API token")
	ErrUnknownToken  = errors.New("unknown API token")
	ErrRevokedToken  = errors.New("revoked API token")
	ErrBadWriteKey   = errors.New("unknown or revoked write key")
)

// Tenant is one SaaS vendor. Its ID appears in NATS subjects and leads
// every ClickHouse sort key.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// OwnerTrait is the account trait naming an account's owner (its
	// CSM); empty means the services' default.
	OwnerTrait string `json:"owner_trait,omitempty"`
}

// Source is one of a tenant's event sources (a web app, a backend).
type Source struct {
	ID        string    `json:"id"`
	TenantID  string    `json:"tenant_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// WriteKey authenticates SDK calls for a source. It is a public identifier,
// stored as is.
type WriteKey struct {
	Key       string    `json:"key"`
	TenantID  string    `json:"tenant_id"`
	SourceID  string    `json:"source_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Active reports whether the key is accepted at now.
func (k WriteKey) Active(now time.Time) bool {
	return k.RevokedAt.IsZero() && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt))
}

// Token is an API token's record. Only a hash of its secret is kept.
type Token struct {
	ID        string         `json:"id"`
	TenantID  string         `json:"tenant_id"`
	Name      string         `json:"name"`
	Scopes    []authv1.Scope `json:"scopes"`
	Hash      string         `json:"hash"`
	CreatedAt time.Time      `json:"created_at"`
	RevokedAt time.Time      `json:"revoked_at,omitzero"`
}

// Active reports whether the token is accepted.
func (t Token) Active() bool { return t.RevokedAt.IsZero() }

// Principal is an authenticated caller.
type Principal struct {
	TenantID string
	TokenID  string
	Scopes   []authv1.Scope
}

// Has reports whether the principal holds scope. Admin includes read and
// write within the tenant; operator (tenant management) is separate.
func (p Principal) Has(scope authv1.Scope) bool {
	if slices.Contains(p.Scopes, scope) {
		return true
	}
	return (scope == authv1.Scope_SCOPE_READ || scope == authv1.Scope_SCOPE_WRITE) &&
		slices.Contains(p.Scopes, authv1.Scope_SCOPE_ADMIN)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller set by the auth interceptor.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

var tenantIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// ValidateTenantID checks that id can stand in NATS subjects and keys.
func ValidateTenantID(id string) error {
	if !tenantIDRe.MatchString(id) {
		return fmt.Errorf("%w: tenant id %q must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit", ErrInvalid, id)
	}
	return nil
}

// ParseScope reads "read", "write", "admin" or "operator".
func ParseScope(s string) (authv1.Scope, error) {
	switch s {
	case "read":
		return authv1.Scope_SCOPE_READ, nil
	case "write":
		return authv1.Scope_SCOPE_WRITE, nil
	case "admin":
		return authv1.Scope_SCOPE_ADMIN, nil
	case "operator":
		return authv1.Scope_SCOPE_OPERATOR, nil
	}
	return 0, fmt.Errorf("%w: scope %q is not one of read, write, admin, operator", ErrInvalid, s)
}

// ScopeName is the short name ParseScope reads.
func ScopeName(s authv1.Scope) string {
	switch s {
	case authv1.Scope_SCOPE_READ:
		return "read"
	case authv1.Scope_SCOPE_WRITE:
		return "write"
	case authv1.Scope_SCOPE_ADMIN:
		return "admin"
	case authv1.Scope_SCOPE_OPERATOR:
		return "operator"
	}
	return s.String()
}
