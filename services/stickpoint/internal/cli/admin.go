package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stickpoint/stickpoint/pkg/tenancy"
	adminv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/admin/v1"
	authv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/auth/v1"
)

// ownerOf is a tenant's owner trait as people read it.
func ownerOf(t *adminv1.Tenant) string {
	if t.GetOwnerTrait() == "" {
		return "csm_email (the default)"
	}
	return t.GetOwnerTrait()
}

func admin(s *session) adminv1.AdminServiceClient { return adminv1.NewAdminServiceClient(s.conn) }

func tenantsCommand(env environ) *cobra.Command {
	return group("tenants", "Create, list and read tenants", []sub{
		{"create ID", "Create a tenant with a source, write key and admin token (operator token)", 1},
		{"list", "List tenants (operator token)", 0},
		{"get", "The caller's tenant", 0},
		{"update", "Change the caller's tenant's settings: --owner-trait", 0},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		name := fs.String("name", "", "display name (create)")
		ownerTrait := fs.String("owner-trait", "", "the account trait naming an account's owner (its CSM); empty: the default, csm_email (update)")
		return func(ctx context.Context, sub string, pos []string) error {
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			switch sub {
			case "create":
				if len(pos) != 1 {
					return fmt.Errorf("stickpoint tenants create ID [--name NAME]: %w", errUsage)
				}
				resp, err := admin(s).CreateTenant(s.ctx, &adminv1.CreateTenantRequest{Id: pos[0], Name: *name})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "tenant: %s\n", resp.GetTenant().GetId())
				if keys := resp.GetSource().GetWriteKeys(); len(keys) > 0 {
					fmt.Fprintf(env.stdout, "write key: %s\n", keys[0].GetKey())
				}
				fmt.Fprintf(env.stdout, "api token: %s\n", resp.GetAdminToken())
				fmt.Fprintln(env.stdout, "  (the token is shown once; it is stored hashed)")
				return nil
			case "list":
				resp, err := admin(s).ListTenants(s.ctx, &adminv1.ListTenantsRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tCREATED")
				for _, t := range resp.GetTenants() {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", t.GetId(), t.GetName(), when(t.GetCreateTime()))
				}
				return tw.Flush()
			case "update":
				resp, err := admin(s).UpdateTenant(s.ctx, &adminv1.UpdateTenantRequest{OwnerTrait: *ownerTrait})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "tenant %s: owner trait %s\n", resp.GetTenant().GetId(), ownerOf(resp.GetTenant()))
				return nil
			default: // get
				resp, err := admin(s).GetTenant(s.ctx, &adminv1.GetTenantRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "%s\t%s\tcreated %s\towner trait %s\n", resp.GetTenant().GetId(), resp.GetTenant().GetName(),
					when(resp.GetTenant().GetCreateTime()), ownerOf(resp.GetTenant()))
				return nil
			}
		}
	})
}

func keysCommand(env environ) *cobra.Command {
	return group("keys", "Manage sources and their write keys", []sub{
		{"create", "Create a source and its write key (--name)", 0},
		{"list", "List write keys", 0},
		{"rotate SOURCE_ID", "Issue a new write key for a source", 1},
		{"revoke KEY", "Revoke a write key now", 1},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		name := fs.String("name", "", "source name (create)")
		grace := fs.Duration("grace", 0, "how long the old keys keep working (rotate); 0 stops them now")
		return func(ctx context.Context, sub string, pos []string) error {
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			switch sub {
			case "create":
				if *name == "" {
					return fmt.Errorf("stickpoint keys create --name NAME: a source name is required: %w", errUsage)
				}
				resp, err := admin(s).CreateSource(s.ctx, &adminv1.CreateSourceRequest{Name: *name})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "source: %s (%s)\nwrite key: %s\n", resp.GetSource().GetName(), resp.GetSource().GetId(), resp.GetSource().GetWriteKeys()[0].GetKey())
				return nil
			case "list":
				resp, err := admin(s).ListSources(s.ctx, &adminv1.ListSourcesRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WRITE KEY\tSOURCE\tSOURCE ID\tCREATED\tSTATUS")
				for _, src := range resp.GetSources() {
					for _, k := range src.GetWriteKeys() {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.GetKey(), src.GetName(), src.GetId(), when(k.GetCreateTime()), keyStatus(k))
					}
				}
				return tw.Flush()
			case "rotate":
				if len(pos) != 1 {
					return fmt.Errorf("stickpoint keys rotate SOURCE_ID [--grace 24h]: %w", errUsage)
				}
				resp, err := admin(s).RotateWriteKey(s.ctx, &adminv1.RotateWriteKeyRequest{SourceId: pos[0], GracePeriodSeconds: int64(*grace / time.Second)})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "write key: %s\n", resp.GetWriteKey().GetKey())
				if *grace > 0 {
					fmt.Fprintf(env.stdout, "older keys of %s stop working in %s\n", pos[0], *grace)
				} else {
					fmt.Fprintf(env.stdout, "older keys of %s are revoked\n", pos[0])
				}
				return nil
			default: // revoke
				if len(pos) != 1 {
					return fmt.Errorf("stickpoint keys revoke KEY: %w", errUsage)
				}
				resp, err := admin(s).RevokeWriteKey(s.ctx, &adminv1.RevokeWriteKeyRequest{Key: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "revoked %s\n", resp.GetWriteKey().GetKey())
				return nil
			}
		}
	})
}

func keyStatus(k *adminv1.WriteKey) string {
	switch {
	case k.GetActive() && k.GetExpireTime() != nil:
		return "active until " + when(k.GetExpireTime())
	case k.GetActive():
		return "active"
	case k.GetRevokeTime() != nil:
		return "revoked " + when(k.GetRevokeTime())
	default:
		return "expired " + when(k.GetExpireTime())
	}
}

func tokensCommand(env environ) *cobra.Command {
	return group("tokens", "Manage API tokens", []sub{
		{"create", "Create an API token (--name, --scopes)", 0},
		{"list", "List API tokens", 0},
		{"revoke ID", "Revoke an API token", 1},
	}, func(fs *pflag.FlagSet) func(context.Context, string, []string) error {
		cf := addClientFlags(fs, env)
		name := fs.String("name", "", "what the token is for (create)")
		scopesFlag := fs.String("scopes", "read", "comma-separated scopes: read, write, admin (create)")
		return func(ctx context.Context, sub string, pos []string) error {
			var scopes []authv1.Scope
			if sub == "create" {
				for _, p := range strings.Split(*scopesFlag, ",") {
					sc, err := tenancy.ParseScope(strings.TrimSpace(p))
					if err != nil {
						return fmt.Errorf("--scopes: %w: %w", err, errUsage)
					}
					scopes = append(scopes, sc)
				}
			}
			s, done, err := dial(ctx, cf, env)
			if err != nil {
				return err
			}
			defer done()
			switch sub {
			case "create":
				resp, err := admin(s).CreateToken(s.ctx, &adminv1.CreateTokenRequest{Name: *name, Scopes: scopes})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "token id: %s\napi token: %s\n  (shown once; it is stored hashed)\n", resp.GetToken().GetId(), resp.GetSecret())
				return nil
			case "list":
				resp, err := admin(s).ListTokens(s.ctx, &adminv1.ListTokensRequest{})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED\tSTATUS")
				for _, t := range resp.GetTokens() {
					names := make([]string, len(t.GetScopes()))
					for i, sc := range t.GetScopes() {
						names[i] = tenancy.ScopeName(sc)
					}
					st := "active"
					if !t.GetActive() {
						st = "revoked " + when(t.GetRevokeTime())
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.GetId(), t.GetName(), strings.Join(names, ","), when(t.GetCreateTime()), st)
				}
				return tw.Flush()
			default: // revoke
				if len(pos) != 1 {
					return fmt.Errorf("stickpoint tokens revoke ID: %w", errUsage)
				}
				resp, err := admin(s).RevokeToken(s.ctx, &adminv1.RevokeTokenRequest{Id: pos[0]})
				if err != nil {
					return s.explain(err)
				}
				if *cf.asJSON {
					return s.printJSON(resp)
				}
				fmt.Fprintf(env.stdout, "revoked token %s\n", resp.GetToken().GetId())
				return nil
			}
		}
	})
}
