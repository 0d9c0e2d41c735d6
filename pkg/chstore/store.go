// Package chstore is Stickpoint's one way to talk to ClickHouse. A Store runs
// the same SQL on two engines: a ClickHouse server (or cluster) through
// clickhouse-go/v2, and chDB, ClickHouse's engine embedded as a shared
// library. Every table definition and query in the repo must run unchanged
// on both, which the conformance tests check.
//
// Values are always bound with ? placeholders (see Bind), never concatenated
// into SQL.
package chstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

// Engine names, as used in configuration.
const (
	EngineEmbedded = "embedded"
	EngineServer   = "server"
)

// ReadsInFlight is how many independent reads a caller runs at once (a
// scoring or evaluation round's reads): a short query keeps about one
// core busy, ClickHouse sorting its result on one thread, and the target
// machine has two. Both engines serve concurrent queries.
const ReadsInFlight = 2

// Store is a ClickHouse database seen through one engine. Implementations are
// safe for concurrent use.
type Store interface {
	// Engine is EngineEmbedded or EngineServer.
	Engine() string
	// Version is the engine's ClickHouse version, detected when opened.
	Version() Version
	// Exec runs one statement that returns no rows.
	Exec(ctx context.Context, query string, args ...any) error
	// Query runs one statement and returns its rows, fully read.
	Query(ctx context.Context, query string, args ...any) (*Rows, error)
	// Insert writes rows into table as one insert. columns names every
	// column given, in order (the 18.16 server needs the explicit list).
	Insert(ctx context.Context, table string, columns []string, rows [][]any) error
	// InsertFrom is Insert with the rows given by src, typed where the
	// hot paths need it (see RowSource).
	InsertFrom(ctx context.Context, table string, columns []string, src RowSource) error
	// Close releases the engine. It is safe to call more than once.
	Close() error
}

// Config selects and configures an engine.
type Config struct {
	// Engine is "embedded" (chDB, the default) or "server".
	Engine string `json:"engine"`
	// Database holds every Stickpoint table; it is created if missing.
	Database string `json:"database"`

	// Addr lists host:port native-protocol addresses (server engine).
	Addr     []string `json:"addr"`
	Username string   `json:"username"`
	Password string   `json:"password"`

	// DataDir is chDB's data folder (embedded engine).
	DataDir string `json:"data_dir"`
	// LibPath is the path of libchdb.so (embedded engine). Empty means
	// $STICKPOINT_CHDB_LIB, then the cache folder `make chdb` fills.
	LibPath string `json:"lib_path"`

	// PoolSize is how many statements run at once: connections to the
	// embedded engine's data folder, or the server engine's open
	// connections. The writer's inserts and API reads share them.
	PoolSize int `json:"pool_size"`
}

// DefaultConfig is the embedded engine in ./.stickpoint/clickhouse.
func DefaultConfig() Config {
	return Config{
		Engine:   EngineEmbedded,
		Database: "stickpoint",
		Addr:     []string{"127.0.0.1:9000"},
		Username: "default",
		DataDir:  filepath.Join(".stickpoint", "clickhouse"),
		PoolSize: 8,
	}
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate reports the first invalid field by name.
func (c Config) Validate() error {
	switch c.Engine {
	case EngineEmbedded:
		if c.DataDir == "" {
			return errors.New("clickhouse.data_dir: required for the embedded engine")
		}
	case EngineServer:
		if len(c.Addr) == 0 {
			return errors.New("clickhouse.addr: at least one host:port is required for the server engine")
		}
	default:
		return fmt.Errorf("clickhouse.engine: %q is not one of %q, %q", c.Engine, EngineEmbedded, EngineServer)
	}
	if c.PoolSize < 1 || c.PoolSize > 256 {
		return fmt.Errorf("clickhouse.pool_size: %d is not between 1 and 256", c.PoolSize)
	}
	if !identRe.MatchString(c.Database) {
		return fmt.Errorf("clickhouse.database: %q is not a plain identifier", c.Database)
	}
	return nil
}

// Open opens the configured engine and makes sure the database exists.
func Open(ctx context.Context, cfg Config) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Engine == EngineServer {
		return openServer(ctx, cfg)
	}
	return openEmbedded(cfg)
}

// DefaultLibPath is where `make chdb` caches libchdb.so:
// $STICKPOINT_CHDB_LIB if set, else <user cache dir>/stickpoint/chdb/<ChDBVersion>/libchdb.so.
func DefaultLibPath() string {
	if p := os.Getenv("STICKPOINT_CHDB_LIB"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "stickpoint", "chdb", ChDBVersion, "libchdb.so")
}

// ChDBVersion is the pinned version of the npm package @chdb/lib-linux-x64-gnu
// that scripts/fetch-chdb.sh installs.
const ChDBVersion = "26.5.3"

// Version is a ClickHouse version, for migrations that use a newer server
// feature where it exists and keep a tested fallback where it doesn't.
type Version struct{ Major, Minor, Patch int }

var versionRe = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion reads "18.16.1" or "26.5.1.1".
func ParseVersion(s string) (Version, error) {
	m := versionRe.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("parse clickhouse version %q", s)
	}
	var v Version
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// AtLeast reports whether v >= o.
func (v Version) AtLeast(o Version) bool {
	if v.Major != o.Major {
		return v.Major > o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor > o.Minor
	}
	return v.Patch >= o.Patch
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }
