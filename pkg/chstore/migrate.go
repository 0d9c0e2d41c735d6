package chstore

import (
	"context"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A migration is a file NNNN_name.sql in a component's embedded migrations
// folder. A variant NNNN_name@MAJOR.MINOR.sql replaces it on engines at
// least that version, so a migration can use a newer server feature (codecs,
// LowCardinality, TTL) and keep a fallback for older servers; the tests run
// on both kinds of engine, so both files stay tested.
//
// ClickHouse DDL is not transactional: a migration whose third statement
// fails has applied its first two. So every statement must be idempotent
// (CREATE ... IF NOT EXISTS; ADD COLUMN IF NOT EXISTS where the engine has
// it, which the 18.16 server does not), and a failed migration is run again.
type Migration struct {
	Version    int
	Name       string
	MinVersion Version // zero for the base file
	SQL        string
}

var migrationRe = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)(?:@(\d+\.\d+))?\.sql$`)

const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    component  String,
    version    UInt32,
    name       String,
    applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY (component, version)`

// LoadMigrations reads the migrations in the root of fsys and picks, for each
// version, the file that fits the engine version v.
func LoadMigrations(fsys fs.FS, v Version) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	chosen := map[int]Migration{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		m := migrationRe.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name must be NNNN_name.sql or NNNN_name@MAJOR.MINOR.sql", e.Name())
		}
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		num, _ := strconv.Atoi(m[1])
		mig := Migration{Version: num, Name: m[2], SQL: string(body)}
		if m[3] != "" {
			if mig.MinVersion, err = ParseVersion(m[3]); err != nil {
				return nil, err
			}
			if !v.AtLeast(mig.MinVersion) {
				continue
			}
		}
		if prev, ok := chosen[num]; ok {
			if prev.Name != mig.Name {
				return nil, fmt.Errorf("migration %04d has two names: %s and %s", num, prev.Name, mig.Name)
			}
			if !mig.MinVersion.AtLeast(prev.MinVersion) {
				continue
			}
		}
		chosen[num] = mig
	}
	out := make([]Migration, 0, len(chosen))
	for _, m := range chosen {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: versions must run 0001, 0002, ... without gaps", m.Version, m.Name)
		}
	}
	return out, nil
}

// Migrate applies component's migrations from fsys that are not yet
// recorded in schema_migrations, in order, and returns the ones it applied.
// It is run by an explicit step (`stickpoint migrate`, or at start in
// embedded mode), not raced by every replica.
func Migrate(ctx context.Context, s Store, component string, fsys fs.FS) ([]Migration, error) {
	migs, err := LoadMigrations(fsys, s.Version())
	if err != nil {
		return nil, fmt.Errorf("%s migrations: %w", component, err)
	}
	if err := s.Exec(ctx, migrationsTable); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := s.Query(ctx, "SELECT version FROM schema_migrations FINAL WHERE component = ?", component)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[int(v)] = true
	}
	var applied []Migration
	for _, m := range migs {
		if done[m.Version] {
			continue
		}
		stmts, err := SplitStatements(m.SQL)
		if err != nil {
			return applied, fmt.Errorf("migration %s %04d_%s: %w", component, m.Version, m.Name, err)
		}
		for i, stmt := range stmts {
			if err := s.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s %04d_%s statement %d: %w", component, m.Version, m.Name, i+1, err)
			}
		}
		err = s.Insert(ctx, "schema_migrations", []string{"component", "version", "name", "applied_at"},
			[][]any{{component, uint32(m.Version), m.Name, time.Now().UTC()}})
		if err != nil {
			return applied, fmt.Errorf("record migration %s %04d: %w", component, m.Version, err)
		}
		applied = append(applied, m)
	}
	return applied, nil
}

// SplitStatements splits SQL text on semicolons outside quotes and comments,
// dropping empty statements and comment-only ones. Neither engine runs
// several statements in one call.
func SplitStatements(sql string) ([]string, error) {
	var out []string
	start := 0
	flush := func(end int) {
		stmt := strings.TrimSpace(sql[start:end])
		if strings.TrimSpace(stripComments(stmt)) != "" {
			out = append(out, stmt)
		}
		start = end + 1
	}
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(sql, i, c) - 1
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(sql)
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j := strings.Index(sql[i+2:], "*/")
			if j < 0 {
				return nil, fmt.Errorf("unterminated comment")
			}
			i += j + 3
		case c == ';':
			flush(i)
		}
	}
	if start < len(sql) {
		flush(len(sql))
	}
	return out, nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); !strings.HasPrefix(t, "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
