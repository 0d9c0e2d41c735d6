package chstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// chDB keeps one engine per process: a second chdb_connect with another
// data folder is not supported. So the process shares one session, and each
// Store on it is a database within that session (tests give each their own).
type chdbSession struct {
	mu        sync.Mutex // a chDB connection runs one query at a time
	conn      unsafe.Pointer
	path      string
	refs      int
	currentDB string
	version   Version
}

var (
	sessionMu sync.Mutex
	session   *chdbSession
)

type embeddedStore struct {
	s      *chdbSession
	db     string
	closed atomic.Bool
}

func openEmbedded(cfg Config) (Store, error) {
	lib := cfg.LibPath
	if lib == "" {
		lib = DefaultLibPath()
	}
	if _, err := os.Stat(lib); err != nil {
		return nil, fmt.Errorf("clickhouse.lib_path: embedded ClickHouse library not found at %s: run `make chdb` or set STICKPOINT_CHDB_LIB: %w", lib, err)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("clickhouse.data_dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("clickhouse.data_dir: %w", err)
	}

	sessionMu.Lock()
	defer sessionMu.Unlock()
	if session == nil {
		if err := chdbLoad(lib); err != nil {
			return nil, fmt.Errorf("load %s: %w", lib, err)
		}
		conn, err := chdbConnect([]string{"clickhouse", "--path=" + dir})
		if err != nil {
			return nil, fmt.Errorf("open embedded clickhouse in %s: %w", dir, err)
		}
		s := &chdbSession{conn: conn, path: dir}
		out, err := s.run("", "SELECT version()", "TabSeparated")
		if err != nil {
			chdbClose(conn)
			return nil, fmt.Errorf("detect embedded clickhouse version: %w", err)
		}
		if s.version, err = ParseVersion(strings.TrimSpace(string(out))); err != nil {
			chdbClose(conn)
			return nil, err
		}
		session = s
	} else if session.path != dir {
		return nil, fmt.Errorf("clickhouse.data_dir: the embedded engine is already open on %s in this process; chDB supports one data folder per process", session.path)
	}
	if _, err := session.run("", "CREATE DATABASE IF NOT EXISTS "+cfg.Database, "TabSeparated"); err != nil {
		if session.refs == 0 {
			chdbClose(session.conn)
			session = nil
		}
		return nil, fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	session.refs++
	return &embeddedStore{s: session, db: cfg.Database}, nil
}

// run executes one statement with db as the current database.
func (s *chdbSession) run(db, query, format string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil, errors.New("embedded clickhouse is closed")
	}
	if db != "" && db != s.currentDB {
		if _, err := chdbQuery(s.conn, "USE "+db, "TabSeparated"); err != nil {
			return nil, fmt.Errorf("use database %s: %w", db, err)
		}
		s.currentDB = db
	}
	return chdbQuery(s.conn, query, format)
}

func (e *embeddedStore) Engine() string   { return EngineEmbedded }
func (e *embeddedStore) Version() Version { return e.s.version }

func (e *embeddedStore) Exec(ctx context.Context, query string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q, err := Bind(query, args...)
	if err != nil {
		return err
	}
	_, err = e.s.run(e.db, q, "TabSeparated")
	return err
}

func (e *embeddedStore) Query(ctx context.Context, query string, args ...any) (*Rows, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := Bind(query, args...)
	if err != nil {
		return nil, err
	}
	out, err := e.s.run(e.db, q, "JSONCompactEachRowWithNamesAndTypes")
	if err != nil {
		return nil, err
	}
	return parseJSONCompact(out)
}

// parseJSONCompact reads JSONCompactEachRowWithNamesAndTypes: a names line,
// a types line, then one JSON array per row.
func parseJSONCompact(out []byte) (*Rows, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	r := &Rows{}
	if len(bytes.TrimSpace(out)) == 0 {
		return r, nil
	}
	if err := dec.Decode(&r.columns); err != nil {
		return nil, fmt.Errorf("read result column names: %w", err)
	}
	if err := dec.Decode(&r.types); err != nil {
		return nil, fmt.Errorf("read result column types: %w", err)
	}
	for {
		var raw []any
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read result row: %w", err)
		}
		if len(raw) != len(r.types) {
			return nil, fmt.Errorf("result row has %d values for %d columns", len(raw), len(r.types))
		}
		for i, v := range raw {
			c, err := fromJSON(r.types[i], v)
			if err != nil {
				return nil, fmt.Errorf("result column %s: %w", r.columns[i], err)
			}
			raw[i] = c
		}
		r.data = append(r.data, raw)
	}
	return r, nil
}

// Insert sends the rows inline as JSONEachRow, which chDB parses in the
// same call. Times are written at second precision in UTC.
func (e *embeddedStore) Insert(ctx context.Context, table string, columns []string, rows [][]any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	if !identRe.MatchString(table) {
		return fmt.Errorf("insert: table name %q is not a plain identifier", table)
	}
	keys := make([][]byte, len(columns))
	for i, c := range columns {
		if !identRe.MatchString(c) {
			return fmt.Errorf("insert %s: column name %q is not a plain identifier", table, c)
		}
		keys[i] = strconv.AppendQuote(nil, c)
	}
	buf := make([]byte, 0, 64+len(rows)*len(columns)*16)
	sized := false
	buf = append(buf, "INSERT INTO "...)
	buf = append(buf, table...)
	buf = append(buf, " ("...)
	buf = append(buf, strings.Join(columns, ", ")...)
	buf = append(buf, ") FORMAT JSONEachRow\n"...)
	for n, row := range rows {
		if len(row) != len(columns) {
			return fmt.Errorf("insert %s: row %d has %d values for %d columns", table, n, len(row), len(columns))
		}
		buf = append(buf, '{')
		for i, v := range row {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, keys[i]...)
			buf = append(buf, ':')
			var err error
			if buf, err = appendJSONValue(buf, v); err != nil {
				return fmt.Errorf("insert %s: row %d column %s: %w", table, n, columns[i], err)
			}
		}
		buf = append(buf, "}\n"...)
		if !sized { // size the buffer from the first row, so it grows once at most
			if want := len(buf) * (len(rows) + 1) * 11 / 10; want > cap(buf) {
				buf = append(make([]byte, 0, want), buf...)
			}
			sized = true
		}
	}
	if _, err := e.s.run(e.db, unsafe.String(unsafe.SliceData(buf), len(buf)), "TabSeparated"); err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	return nil
}

func appendJSONValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendJSONString(b, x), nil
	case []byte:
		return appendJSONString(b, string(x)), nil
	case bool:
		if x {
			return append(b, '1'), nil
		}
		return append(b, '0'), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(b, x, 10), nil
	case float32:
		return appendJSONFloat(b, float64(x))
	case float64:
		return appendJSONFloat(b, x)
	case time.Time:
		b = append(b, '"')
		b = x.UTC().AppendFormat(b, time.DateTime)
		return append(b, '"'), nil
	case []string:
		b = append(b, '[')
		for i, s := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return append(b, ']'), nil
	case []int64:
		b = append(b, '[')
		for i, n := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, n, 10)
		}
		return append(b, ']'), nil
	case []uint64:
		b = append(b, '[')
		for i, n := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, n, 10)
		}
		return append(b, ']'), nil
	}
	return b, fmt.Errorf("unsupported type %T", v)
}

func appendJSONFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("non-finite float %v", f)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64), nil
}

// appendJSONString writes s as a JSON string. ClickHouse Strings are bytes,
// so invalid UTF-8 is passed through byte for byte rather than replaced.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Close drops this store's reference; the session closes with the last one.
func (e *embeddedStore) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	sessionMu.Lock()
	defer sessionMu.Unlock()
	e.s.refs--
	if e.s.refs > 0 {
		return nil
	}
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	chdbClose(e.s.conn)
	e.s.conn = nil
	session = nil
	return nil
}
