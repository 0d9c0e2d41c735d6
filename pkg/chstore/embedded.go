package chstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// chDB keeps one engine per process: a second chdb_connect with another
// data folder is not supported. So the process shares one session, and each
// Store on it is a database within that session (tests give each their own).
//
// A chDB connection runs one query at a time, but several connections on
// the one data folder run in parallel (DESIGN.md, "Storage"). The session
// holds a pool of them, so a large insert on one does not block an API read
// on another.
type chdbSession struct {
	path    string
	version Version
	idle    chan *chdbConn // connections not running a query
	conns   []*chdbConn
	refs    int // open Stores
}

// chdbConn is one connection and the database it last switched to (USE
// is per connection).
type chdbConn struct {
	ptr unsafe.Pointer
	db  string
}

var (
	sessionMu sync.Mutex
	session   *chdbSession
)

type embeddedStore struct {
	s      *chdbSession
	db     string
	closed atomic.Bool

	mu    sync.Mutex
	types map[string]string // "table.column" -> ClickHouse type, for inserts
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
		s, err := connectSession(lib, dir, cfg.PoolSize)
		if err != nil {
			return nil, err
		}
		session = s
	} else if session.path != dir {
		return nil, fmt.Errorf("clickhouse.data_dir: the embedded engine is already open on %s in this process; chDB supports one data folder per process", session.path)
	}
	if _, err := session.run(context.Background(), "", "CREATE DATABASE IF NOT EXISTS "+cfg.Database, "TabSeparated"); err != nil {
		if session.refs == 0 {
			session.close()
			session = nil
		}
		return nil, fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	session.refs++
	return &embeddedStore{s: session, db: cfg.Database, types: map[string]string{}}, nil
}

// connectSession loads the library and opens size connections on dir.
func connectSession(lib, dir string, size int) (*chdbSession, error) {
	if err := chdbLoad(lib); err != nil {
		return nil, fmt.Errorf("load %s: %w", lib, err)
	}
	size = max(size, 1)
	s := &chdbSession{path: dir, idle: make(chan *chdbConn, size)}
	for range size {
		ptr, err := chdbConnect([]string{"clickhouse", "--path=" + dir})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("open embedded clickhouse in %s: %w", dir, err)
		}
		c := &chdbConn{ptr: ptr}
		s.conns = append(s.conns, c)
		s.idle <- c
	}
	out, err := s.run(context.Background(), "", "SELECT version()", "TabSeparated")
	if err != nil {
		s.close()
		return nil, fmt.Errorf("detect embedded clickhouse version: %w", err)
	}
	if s.version, err = ParseVersion(strings.TrimSpace(string(out))); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// run executes one statement on a free connection, with db as the current
// database. Waiting for a connection ends with ctx; a statement that has
// started runs to its end (chDB can't interrupt it).
func (s *chdbSession) run(ctx context.Context, db, query, format string) ([]byte, error) {
	var c *chdbConn
	select {
	case c = <-s.idle:
	default:
		select {
		case c = <-s.idle:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for an embedded clickhouse connection: %w", ctx.Err())
		}
	}
	defer func() { s.idle <- c }()
	if c.ptr == nil {
		return nil, errors.New("embedded clickhouse is closed")
	}
	if db != "" && db != c.db {
		if _, err := chdbQuery(c.ptr, "USE "+db, "TabSeparated"); err != nil {
			return nil, fmt.Errorf("use database %s: %w", db, err)
		}
		c.db = db
	}
	return chdbQuery(c.ptr, query, format)
}

// close waits for every connection to finish its statement, then closes
// them all.
func (s *chdbSession) close() {
	for range s.conns {
		c := <-s.idle
		if c.ptr != nil {
			chdbClose(c.ptr)
			c.ptr = nil
		}
	}
	for _, c := range s.conns {
		s.idle <- c // a late caller gets "closed", not a hang
	}
}

func (e *embeddedStore) Engine() string   { return EngineEmbedded }
func (e *embeddedStore) Version() Version { return e.s.version }

func (e *embeddedStore) Exec(ctx context.Context, query string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q, err := bindEmbedded(query, args...)
	if err != nil {
		return err
	}
	_, err = e.s.run(ctx, e.db, q, "TabSeparated")
	return err
}

func (e *embeddedStore) Query(ctx context.Context, query string, args ...any) (*Rows, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q, err := bindEmbedded(query, args...)
	if err != nil {
		return nil, err
	}
	out, err := e.s.run(ctx, e.db, q, "RowBinaryWithNamesAndTypes")
	if err != nil {
		return nil, err
	}
	rows, err := parseRowBinary(out)
	if !errors.Is(err, errUnsupportedType) {
		return rows, err
	}
	// A type the binary decoder doesn't read: the query again, as text.
	if out, err = e.s.run(ctx, e.db, q, "JSONCompactEachRowWithNamesAndTypes"); err != nil {
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

// Insert writes the rows as RowBinary to a file in memory (/dev/shm) and
// has chDB read it, about three times cheaper per row than inline text
// (DESIGN.md, "Storage"). A column type it can't encode falls back to
// inline TabSeparated. Times are written at second precision in UTC.
func (e *embeddedStore) Insert(ctx context.Context, table string, columns []string, rows [][]any) error {
	return e.InsertFrom(ctx, table, columns, anyRows(rows))
}

// InsertFrom is Insert with the rows given by src.
func (e *embeddedStore) InsertFrom(ctx context.Context, table string, columns []string, src RowSource) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if src.Len() == 0 {
		return nil
	}
	if !identRe.MatchString(table) {
		return fmt.Errorf("insert: table name %q is not a plain identifier", table)
	}
	for _, c := range columns {
		if !identRe.MatchString(c) {
			return fmt.Errorf("insert %s: column name %q is not a plain identifier", table, c)
		}
	}
	types, err := e.columnTypes(ctx, table, columns)
	if err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	encs := make([]rowEncoder, len(columns))
	for i, t := range types {
		enc, ok := rowBinaryEncoder(t)
		if !ok {
			return e.insertText(ctx, table, columns, collect(src))
		}
		encs[i] = enc
	}
	path := filepath.Join(spoolDir(), fmt.Sprintf("stickpoint-insert-%d-%d.bin", os.Getpid(), spoolSeq.Add(1)))
	if err := spoolRows(path, src, newBinaryWriter(nil, columns, types, encs)); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("insert %s: %w", table, err)
	}
	defer func() { _ = os.Remove(path) }()
	structure := make([]string, len(columns))
	for i, c := range columns {
		structure[i] = c + " " + types[i]
	}
	q, err := Bind("INSERT INTO "+table+" ("+strings.Join(columns, ", ")+") SELECT * FROM file(?, 'RowBinary', ?)",
		path, strings.Join(structure, ", "))
	if err != nil {
		return err
	}
	if _, err := e.s.run(ctx, e.db, q, "TabSeparated"); err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	return nil
}

var spoolSeq atomic.Int64

// spoolRows encodes src's rows into the file at path, a chunk at a time.
// Inserts of tens of megabytes come one after another: a pooled chunk
// spares the allocations, the copies and the page faults of a buffer
// grown to the whole insert each time (for a backfill's signals, whose
// payloads make inserts of a hundred megabytes, they were a sixth of
// its time).
func spoolRows(path string, src RowSource, w *binaryWriter) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool rows: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("spool rows: %w", cerr)
		}
	}()
	chunk := spoolChunks.Get().(*[]byte)
	defer spoolChunks.Put(chunk)
	w.buf = (*chunk)[:0]
	flush := func() error {
		if _, err := f.Write(w.buf); err != nil {
			return fmt.Errorf("spool rows: %w", err)
		}
		if cap(w.buf) <= 2*spoolChunk { // a row larger than a chunk grew it: let that go
			*chunk = w.buf
		}
		w.buf = (*chunk)[:0]
		return nil
	}
	for n := range src.Len() {
		w.startRow(n)
		src.WriteRow(n, w)
		w.endRow()
		if w.err != nil {
			return w.err
		}
		if len(w.buf) >= spoolChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// spoolChunk is how much of an insert is encoded before it is written out.
const spoolChunk = 4 << 20

var spoolChunks = sync.Pool{New: func() any { b := make([]byte, 0, spoolChunk+64<<10); return &b }}

// spoolDir is where inserts are spooled: memory (/dev/shm) where there is
// one, else the temporary folder.
var spoolDir = sync.OnceValue(func() string {
	if f, err := os.CreateTemp("/dev/shm", "stickpoint-probe-"); err == nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return "/dev/shm"
	}
	return os.TempDir()
})

// columnTypes returns the ClickHouse types of table's columns, read once
// from system.columns (and again for a column not seen before).
func (e *embeddedStore) columnTypes(ctx context.Context, table string, columns []string) ([]string, error) {
	lookup := func() ([]string, bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		out := make([]string, len(columns))
		for i, c := range columns {
			t, ok := e.types[table+"."+c]
			if !ok {
				return nil, false
			}
			out[i] = t
		}
		return out, true
	}
	if types, ok := lookup(); ok {
		return types, nil
	}
	r, err := e.Query(ctx, "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = ?", table)
	if err != nil {
		return nil, fmt.Errorf("read column types: %w", err)
	}
	e.mu.Lock()
	for r.Next() {
		var name, typ string
		if err := r.Scan(&name, &typ); err != nil {
			e.mu.Unlock()
			return nil, err
		}
		e.types[table+"."+name] = typ
	}
	e.mu.Unlock()
	if types, ok := lookup(); ok {
		return types, nil
	}
	return nil, fmt.Errorf("table %s lacks one of the columns %v", table, columns)
}

// insertText sends the rows inline as TabSeparated, which chDB parses in
// the same call: for column types RowBinary can't write here.
// TabSeparated rather than JSONEachRow: it parses about twice as fast, and
// JSON text in String columns (properties, context) needs no escaping in it.
func (e *embeddedStore) insertText(ctx context.Context, table string, columns []string, rows [][]any) error {
	buf := make([]byte, 0, 64+len(rows)*len(columns)*16)
	sized := false
	buf = append(buf, "INSERT INTO "...)
	buf = append(buf, table...)
	buf = append(buf, " ("...)
	buf = append(buf, strings.Join(columns, ", ")...)
	buf = append(buf, ") FORMAT TabSeparated\n"...)
	for n, row := range rows {
		if len(row) != len(columns) {
			return fmt.Errorf("insert %s: row %d has %d values for %d columns", table, n, len(row), len(columns))
		}
		rowStart := len(buf)
		for i, v := range row {
			if i > 0 {
				buf = append(buf, '\t')
			}
			var err error
			if buf, err = appendValue(buf, v, true); err != nil {
				return fmt.Errorf("insert %s: row %d column %s: %w", table, n, columns[i], err)
			}
		}
		if len(buf) == rowStart {
			// chDB ends inline INSERT data at the first empty line and runs
			// what follows as SQL, so an empty row must never be sent.
			return fmt.Errorf("insert %s: row %d is an empty line, which ends inline data in the embedded engine: give the table a second column", table, n)
		}
		buf = append(buf, '\n')
		if !sized { // size the buffer from the first row, so it grows once at most
			if want := len(buf) * (len(rows) + 1) * 11 / 10; want > cap(buf) {
				buf = append(make([]byte, 0, want), buf...)
			}
			sized = true
		}
	}
	if _, err := e.s.run(ctx, e.db, unsafe.String(unsafe.SliceData(buf), len(buf)), "TabSeparated"); err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	return nil
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
	e.s.close()
	session = nil
	return nil
}
