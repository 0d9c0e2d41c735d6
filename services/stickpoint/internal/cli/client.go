package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr    *string
	token   *string
	asJSON  *bool
	timeout *time.Duration
}

func addClientFlags(fs *pflag.FlagSet, env environ) clientFlags {
	addr := env.getenv("STICKPOINT_ADDR")
	if addr == "" {
		addr = "127.0.0.1:9090"
	}
	return clientFlags{
		addr: fs.String("addr", addr, "server gRPC address (env STICKPOINT_ADDR)"),
		// The default is read when dialling, so help never prints the secret.
		token:   fs.String("token", "", "API token (env STICKPOINT_TOKEN)"),
		asJSON:  fs.Bool("json", false, "print JSON for scripts"),
		timeout: fs.Duration("timeout", 10*time.Second, "how long to wait for the server"),
	}
}

// session is a connection to the server with the caller's token.
type session struct {
	conn *grpc.ClientConn
	// ctx bounds a call by --timeout; streamCtx, for streams that run
	// until interrupted, only carries the token.
	ctx       context.Context
	streamCtx context.Context
	flags     clientFlags
	out       io.Writer
}

func dial(ctx context.Context, f clientFlags, env environ) (*session, context.CancelFunc, error) {
	if *f.token == "" {
		*f.token = env.getenv("STICKPOINT_TOKEN")
	}
	if *f.token == "" {
		return nil, nil, fmt.Errorf("no API token: pass --token or set STICKPOINT_TOKEN (stickpoint dev prints one on first start): %w", errUsage)
	}
	conn, err := grpc.NewClient(*f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", *f.addr, err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*f.token)
	ctx, cancel := context.WithTimeout(authed, *f.timeout)
	return &session{conn: conn, ctx: ctx, streamCtx: authed, flags: f, out: env.stdout}, func() { cancel(); _ = conn.Close() }, nil
}

// readSource reads a file a command puts: path, or standard input for "-".
func readSource(env environ, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(env.stdin)
	}
	return os.ReadFile(path)
}

// explain turns a gRPC error into a message that says what to do.
func (s *session) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("server at %s is unavailable (is `stickpoint dev` running? set --addr or STICKPOINT_ADDR): %s", *s.flags.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer from %s within %s", *s.flags.addr, *s.flags.timeout)
	case codes.Unauthenticated:
		return fmt.Errorf("not authenticated: %s", st.Message())
	case codes.PermissionDenied:
		return fmt.Errorf("permission denied: %s", st.Message())
	}
	return fmt.Errorf("%s: %s", strings.ToLower(strings.ReplaceAll(st.Code().String(), "_", " ")), st.Message())
}

// printJSON writes m as indented protobuf JSON.
func (s *session) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	var v any // re-indent consistently
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(s.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}
