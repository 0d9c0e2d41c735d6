package tenancy

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/natsjs"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

// Bucket is the KV bucket holding tenancy records, keyed
// tenant.<id>, source.<tenant>.<id>, writekey.<key> and token.<id>.
const Bucket = "stickpoint_tenancy"

// Registry reads and writes tenancy records. Reads come from an in-memory
// copy kept current by a KV watch; writes go to KV and are applied locally
// at once, so a revocation holds on this process immediately and on others
// as soon as the watch delivers it.
type Registry struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	mu        sync.RWMutex
	revs      map[string]uint64 // KV revision applied per key
	tenants   map[string]Tenant
	sources   map[string]Source // by tenant + "/" + id
	writeKeys map[string]WriteKey
	tokens    map[string]Token

	watcher jetstream.KeyWatcher
	done    chan struct{}
	stop    sync.Once
}

// Open declares the bucket, loads every record and starts the watch.
func Open(ctx context.Context, bus *natsjs.Bus, log *slog.Logger) (*Registry, error) {
	kv, err := bus.KeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Stickpoint tenants, sources, write keys and API tokens (hashed).",
		History:     5,
	})
	if err != nil {
		return nil, err
	}
	r := &Registry{
		kv: kv, log: log, now: time.Now,
		revs: map[string]uint64{}, tenants: map[string]Tenant{}, sources: map[string]Source{},
		writeKeys: map[string]WriteKey{}, tokens: map[string]Token{},
		done: make(chan struct{}),
	}
	// The watch outlives Open's ctx; Close stops it.
	w, err := kv.WatchAll(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", Bucket, err)
	}
	r.watcher = w
	loaded := make(chan struct{})
	go r.watch(loaded)
	select {
	case <-loaded:
		return r, nil
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("load tenancy records: %w", ctx.Err())
	}
}

func (r *Registry) watch(loaded chan struct{}) {
	defer close(r.done)
	signalled := false
	for e := range r.watcher.Updates() {
		if e == nil { // end of the initial values
			if !signalled {
				close(loaded)
				signalled = true
			}
			continue
		}
		if err := r.apply(e.Key(), e.Revision(), e.Value(), e.Operation() != jetstream.KeyValuePut); err != nil {
			r.log.Error("bad tenancy record", "key", e.Key(), "error", err)
		}
	}
	if !signalled {
		close(loaded)
	}
}

// Close stops the watch. Safe to call more than once.
func (r *Registry) Close() {
	r.stop.Do(func() {
		_ = r.watcher.Stop()
		<-r.done
	})
}

// apply stores one record in the in-memory copy unless a newer revision of
// it is there already.
func (r *Registry) apply(key string, rev uint64, value []byte, deleted bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev <= r.revs[key] {
		return nil
	}
	r.revs[key] = rev
	kind, rest, _ := strings.Cut(key, ".")
	switch kind {
	case "tenant":
		if deleted {
			delete(r.tenants, rest)
			return nil
		}
		var t Tenant
		if err := json.Unmarshal(value, &t); err != nil {
			return err
		}
		r.tenants[t.ID] = t
	case "source":
		tenant, id, _ := strings.Cut(rest, ".")
		if deleted {
			delete(r.sources, tenant+"/"+id)
			return nil
		}
		var s Source
		if err := json.Unmarshal(value, &s); err != nil {
			return err
		}
		r.sources[s.TenantID+"/"+s.ID] = s
	case "writekey":
		if deleted {
			delete(r.writeKeys, rest)
			return nil
		}
		var k WriteKey
		if err := json.Unmarshal(value, &k); err != nil {
			return err
		}
		r.writeKeys[k.Key] = k
	case "token":
		if deleted {
			delete(r.tokens, rest)
			return nil
		}
		var t Token
		if err := json.Unmarshal(value, &t); err != nil {
			return err
		}
		r.tokens[t.ID] = t
	default:
		return fmt.Errorf("unknown record kind %q", kind)
	}
	return nil
}

// put writes a record; create makes it fail if the key exists.
func (r *Registry) put(ctx context.Context, key string, v any, create bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var rev uint64
	if create {
		rev, err = r.kv.Create(ctx, key, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%s: %w", key, ErrAlreadyExists)
		}
	} else {
		rev, err = r.kv.Put(ctx, key, b)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return r.apply(key, rev, b, false)
}

// CreateTenantResult is what CreateTenant made.
type CreateTenantResult struct {
	Tenant   Tenant
	Source   Source
	WriteKey WriteKey
	// Token is the tenant's first token; Secret is its bearer value.
	Token  Token
	Secret string
}

// CreateTenant creates a tenant with a "default" source, its write key, and
// a token with the given scopes (read, write and admin if none).
func (r *Registry) CreateTenant(ctx context.Context, id, name string, scopes ...authv1.Scope) (CreateTenantResult, error) {
	if err := ValidateTenantID(id); err != nil {
		return CreateTenantResult{}, err
	}
	if name == "" {
		name = id
	}
	t := Tenant{ID: id, Name: name, CreatedAt: r.now().UTC()}
	if err := r.put(ctx, "tenant."+id, t, true); err != nil {
		return CreateTenantResult{}, fmt.Errorf("create tenant %s: %w", id, err)
	}
	src, key, err := r.CreateSource(ctx, id, "default")
	if err != nil {
		return CreateTenantResult{}, err
	}
	if len(scopes) == 0 {
		scopes = []authv1.Scope{authv1.Scope_SCOPE_READ, authv1.Scope_SCOPE_WRITE, authv1.Scope_SCOPE_ADMIN}
	}
	tok, secret, err := r.CreateToken(ctx, id, "initial admin token", scopes)
	if err != nil {
		return CreateTenantResult{}, err
	}
	return CreateTenantResult{Tenant: t, Source: src, WriteKey: key, Token: tok, Secret: secret}, nil
}

// UpdateTenant sets a tenant's owner trait (empty: the default).
func (r *Registry) UpdateTenant(ctx context.Context, id, ownerTrait string) (Tenant, error) {
	t, err := r.Tenant(id)
	if err != nil {
		return Tenant{}, err
	}
	if len(ownerTrait) > 200 || strings.TrimSpace(ownerTrait) != ownerTrait {
		return Tenant{}, fmt.Errorf("%w: owner trait %q must be at most 200 characters, without surrounding spaces", ErrInvalid, ownerTrait)
	}
	t.OwnerTrait = ownerTrait
	if err := r.put(ctx, "tenant."+id, t, false); err != nil {
		return Tenant{}, fmt.Errorf("update tenant %s: %w", id, err)
	}
	return t, nil
}

// Tenant returns a tenant by id.
func (r *Registry) Tenant(id string) (Tenant, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tenants[id]
	if !ok {
		return Tenant{}, fmt.Errorf("tenant %s: %w", id, ErrNotFound)
	}
	return t, nil
}

// Tenants lists every tenant by id.
func (r *Registry) Tenants() []Tenant {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Tenant, 0, len(r.tenants))
	for _, t := range r.tenants {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// CreateSource adds a source to tenant, with a new write key.
func (r *Registry) CreateSource(ctx context.Context, tenant, name string) (Source, WriteKey, error) {
	if _, err := r.Tenant(tenant); err != nil {
		return Source{}, WriteKey{}, err
	}
	if name == "" {
		return Source{}, WriteKey{}, fmt.Errorf("%w: source name is required", ErrInvalid)
	}
	s := Source{ID: "src_" + randomString(12), TenantID: tenant, Name: name, CreatedAt: r.now().UTC()}
	if err := r.put(ctx, "source."+tenant+"."+s.ID, s, true); err != nil {
		return Source{}, WriteKey{}, fmt.Errorf("create source: %w", err)
	}
	k, err := r.newWriteKey(ctx, s)
	return s, k, err
}

func (r *Registry) newWriteKey(ctx context.Context, s Source) (WriteKey, error) {
	k := WriteKey{Key: "wk_" + randomString(32), TenantID: s.TenantID, SourceID: s.ID, CreatedAt: r.now().UTC()}
	if err := r.put(ctx, "writekey."+k.Key, k, true); err != nil {
		return WriteKey{}, fmt.Errorf("create write key: %w", err)
	}
	return k, nil
}

// Source returns tenant's source id.
func (r *Registry) Source(tenant, id string) (Source, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.sources[tenant+"/"+id]
	if !ok {
		return Source{}, fmt.Errorf("source %s: %w", id, ErrNotFound)
	}
	return s, nil
}

// Sources lists tenant's sources, oldest first.
func (r *Registry) Sources(tenant string) []Source {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Source
	for _, s := range r.sources {
		if s.TenantID == tenant {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Source) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out
}

// WriteKeys lists a source's keys, newest first.
func (r *Registry) WriteKeys(tenant, source string) []WriteKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []WriteKey
	for _, k := range r.writeKeys {
		if k.TenantID == tenant && k.SourceID == source {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b WriteKey) int { return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.Key, b.Key)) })
	return out
}

// RotateWriteKey gives tenant's source a new key. Its active keys keep
// working for grace, or stop at once when grace is zero.
func (r *Registry) RotateWriteKey(ctx context.Context, tenant, source string, grace time.Duration) (WriteKey, error) {
	s, err := r.Source(tenant, source)
	if err != nil {
		return WriteKey{}, err
	}
	if grace < 0 {
		return WriteKey{}, fmt.Errorf("%w: grace period %v is negative", ErrInvalid, grace)
	}
	nk, err := r.newWriteKey(ctx, s)
	if err != nil {
		return WriteKey{}, err
	}
	now := r.now().UTC()
	for _, k := range r.WriteKeys(tenant, source) {
		if k.Key == nk.Key || !k.Active(now) {
			continue
		}
		if grace == 0 {
			k.RevokedAt = now
		} else if k.ExpiresAt.IsZero() || now.Add(grace).Before(k.ExpiresAt) {
			k.ExpiresAt = now.Add(grace)
		}
		if err := r.put(ctx, "writekey."+k.Key, k, false); err != nil {
			return nk, fmt.Errorf("retire old write key: %w", err)
		}
	}
	return nk, nil
}

// RevokeWriteKey stops one of tenant's write keys at once. A key of another
// tenant is reported as not found.
func (r *Registry) RevokeWriteKey(ctx context.Context, tenant, key string) (WriteKey, error) {
	r.mu.RLock()
	k, ok := r.writeKeys[key]
	r.mu.RUnlock()
	if !ok || k.TenantID != tenant {
		return WriteKey{}, fmt.Errorf("write key: %w", ErrNotFound)
	}
	if k.RevokedAt.IsZero() {
		k.RevokedAt = r.now().UTC()
		if err := r.put(ctx, "writekey."+k.Key, k, false); err != nil {
			return WriteKey{}, err
		}
	}
	return k, nil
}

// ResolveWriteKey returns the active write key record for key: the key
// alone decides the tenant.
func (r *Registry) ResolveWriteKey(key string) (WriteKey, error) {
	r.mu.RLock()
	k, ok := r.writeKeys[key]
	r.mu.RUnlock()
	if !ok || !k.Active(r.now()) {
		return WriteKey{}, ErrBadWriteKey
	}
	return k, nil
}

// tokenPrefix starts every API token: "spt.<id>.<secret>".
const tokenPrefix = "spt."

// CreateToken creates a token for tenant and returns it with its secret,
// which is not stored and can't be shown again.
func (r *Registry) CreateToken(ctx context.Context, tenant, name string, scopes []authv1.Scope) (Token, string, error) {
	if _, err := r.Tenant(tenant); err != nil {
		return Token{}, "", err
	}
	if len(scopes) == 0 {
		return Token{}, "", fmt.Errorf("%w: a token needs at least one scope", ErrInvalid)
	}
	for _, s := range scopes {
		if s == authv1.Scope_SCOPE_UNSPECIFIED || authv1.Scope_name[int32(s)] == "" {
			return Token{}, "", fmt.Errorf("%w: unknown scope %d", ErrInvalid, s)
		}
	}
	scopes = slices.Clone(scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	id := randomString(16)
	secret := randomString(43)
	t := Token{ID: id, TenantID: tenant, Name: name, Scopes: scopes, Hash: hashSecret(secret), CreatedAt: r.now().UTC()}
	if err := r.put(ctx, "token."+id, t, true); err != nil {
		return Token{}, "", fmt.Errorf("create token: %w", err)
	}
	return t, tokenPrefix + id + "." + secret, nil
}

// Tokens lists tenant's tokens, oldest first.
func (r *Registry) Tokens(tenant string) []Token {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Token
	for _, t := range r.tokens {
		if t.TenantID == tenant {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b Token) int { return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out
}

// RevokeToken stops one of tenant's tokens at once. A token of another
// tenant is reported as not found.
func (r *Registry) RevokeToken(ctx context.Context, tenant, id string) (Token, error) {
	r.mu.RLock()
	t, ok := r.tokens[id]
	r.mu.RUnlock()
	if !ok || t.TenantID != tenant {
		return Token{}, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	if t.RevokedAt.IsZero() {
		t.RevokedAt = r.now().UTC()
		if err := r.put(ctx, "token."+id, t, false); err != nil {
			return Token{}, err
		}
	}
	return t, nil
}

// Authenticate resolves a bearer token to its principal.
func (r *Registry) Authenticate(token string) (Principal, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return Principal{}, ErrBadToken
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || id == "" || secret == "" {
		return Principal{}, ErrBadToken
	}
	r.mu.RLock()
	t, found := r.tokens[id]
	_, tenantOK := r.tenants[t.TenantID]
	r.mu.RUnlock()
	// Compare even for an unknown id, so timing says nothing about which ids exist.
	want := t.Hash
	if !found {
		want = strings.Repeat("0", sha256.Size*2)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(want)) != 1 || !found || !tenantOK {
		return Principal{}, ErrUnknownToken
	}
	if !t.Active() {
		return Principal{}, ErrRevokedToken
	}
	return Principal{TenantID: t.TenantID, TokenID: t.ID, Scopes: t.Scopes}, nil
}

// hashSecret is SHA-256: the secrets are 256-bit random strings, so a slow
// password hash would add latency to every request and no safety.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomString is n characters from a 62-letter alphabet, uniformly chosen.
func randomString(n int) string {
	out := make([]byte, n)
	buf := make([]byte, n*2)
	for i := 0; i < n; {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if b >= 248 { // 248 = 4*62: reject to stay uniform
				continue
			}
			out[i] = alphabet[int(b)%62]
			i++
			if i == n {
				break
			}
		}
	}
	return string(out)
}

// EnsureTenant creates tenant id with the given token scopes if it does not
// exist. It returns its first active write key, and the new token's secret
// when it created the tenant (empty otherwise).
func (r *Registry) EnsureTenant(ctx context.Context, id, name string, scopes ...authv1.Scope) (WriteKey, string, error) {
	if _, err := r.Tenant(id); err == nil {
		now := r.now()
		for _, s := range r.Sources(id) {
			for _, k := range r.WriteKeys(id, s.ID) {
				if k.Active(now) {
					return k, "", nil
				}
			}
		}
		srcs := r.Sources(id)
		if len(srcs) == 0 {
			_, k, err := r.CreateSource(ctx, id, "default")
			return k, "", err
		}
		k, err := r.newWriteKey(ctx, srcs[0])
		return k, "", err
	}
	res, err := r.CreateTenant(ctx, id, name, scopes...)
	if err != nil {
		return WriteKey{}, "", err
	}
	return res.WriteKey, res.Secret, nil
}
