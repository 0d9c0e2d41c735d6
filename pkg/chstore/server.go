package chstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

type serverStore struct {
	conn    driver.Conn
	version Version
	closed  atomic.Bool
}

func openServer(ctx context.Context, cfg Config) (Store, error) {
	opts := func(db string) *clickhouse.Options {
		return &clickhouse.Options{
			Addr:         cfg.Addr,
			Auth:         clickhouse.Auth{Database: db, Username: cfg.Username, Password: cfg.Password},
			DialTimeout:  5 * time.Second,
			MaxOpenConns: cfg.PoolSize,
			MaxIdleConns: cfg.PoolSize,
		}
	}
	// The database may not exist yet, so create it from "default" first.
	boot, err := clickhouse.Open(opts("default"))
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %v: %w", cfg.Addr, err)
	}
	err = boot.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database)
	_ = boot.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %s on %v: %w", cfg.Database, cfg.Addr, err)
	}
	conn, err := clickhouse.Open(opts(cfg.Database))
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %v: %w", cfg.Addr, err)
	}
	s := &serverStore{conn: conn}
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("detect clickhouse version on %v: %w", cfg.Addr, err)
	}
	if s.version, err = ParseVersion(v); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *serverStore) Engine() string   { return EngineServer }
func (s *serverStore) Version() Version { return s.version }

func (s *serverStore) Exec(ctx context.Context, query string, args ...any) error {
	q, err := Bind(query, args...)
	if err != nil {
		return err
	}
	return s.conn.Exec(ctx, q)
}

func (s *serverStore) Query(ctx context.Context, query string, args ...any) (*Rows, error) {
	q, err := Bind(query, args...)
	if err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	cts := rows.ColumnTypes()
	r := &Rows{columns: rows.Columns(), types: make([]string, len(cts))}
	for i, ct := range cts {
		r.types[i] = ct.DatabaseTypeName()
	}
	dest := make([]any, len(cts))
	for rows.Next() {
		for i, ct := range cts {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan row: %w", err)
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			row[i] = fromDriver(d)
		}
		r.data = append(r.data, row)
	}
	return r, rows.Err()
}

// Insert sends the rows as one native batch. Values must have the Go type
// that clickhouse-go expects for each column (uint64 for UInt64, and so on).
func (s *serverStore) Insert(ctx context.Context, table string, columns []string, rows [][]any) error {
	return s.InsertFrom(ctx, table, columns, anyRows(rows))
}

// InsertFrom is Insert with the rows given by src; the native batch takes
// them as values either way.
func (s *serverStore) InsertFrom(ctx context.Context, table string, columns []string, src RowSource) error {
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
	// clickhouse-go marks a batch sent even when Send fails, so a failed
	// insert is retried by calling Insert again, which builds a new batch.
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+table+" ("+strings.Join(columns, ", ")+")")
	if err != nil {
		return fmt.Errorf("insert %s: prepare batch: %w", table, err)
	}
	defer func() { _ = batch.Close() }()
	// clickhouse-go wraps an integer that overflows its column (300 in a
	// UInt8 is stored as 44); the embedded engine's encoders refuse it, and
	// check values here too, so both engines refuse the same rows.
	cols := batch.Columns()
	checks := make([]rowEncoder, len(cols))
	for i, c := range cols {
		checks[i], _ = rowBinaryEncoder(string(c.Type()))
	}
	var scratch []byte
	var w valuesWriter
	for n := range src.Len() {
		w.row = w.row[:0]
		src.WriteRow(n, &w)
		row := w.row
		if len(row) != len(columns) {
			return fmt.Errorf("insert %s: row %d has %d values for %d columns", table, n, len(row), len(columns))
		}
		for i, v := range row {
			if i < len(checks) && checks[i] != nil {
				if scratch, err = checks[i](scratch[:0], v); err != nil {
					return fmt.Errorf("insert %s: row %d column %s (%s): %w", table, n, columns[i], cols[i].Type(), err)
				}
			}
		}
		if err := batch.Append(row...); err != nil {
			return fmt.Errorf("insert %s: append row %d: %w", table, n, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %s: send: %w", table, err)
	}
	return nil
}

func (s *serverStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.conn.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
