package chstore

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Rows is a fully read query result. Both engines convert every value to
// one canonical Go type per ClickHouse type, so Scan behaves the same on
// each:
//
//	Int8..Int64 -> int64      UInt8..UInt64 -> uint64    Float32/64 -> float64
//	String, FixedString, UUID, Enum -> string             Bool -> bool
//	Date, DateTime, DateTime64 -> time.Time (UTC)         Array(T) -> []any
//	Nullable(T) -> nil or T   LowCardinality(T) -> T
type Rows struct {
	columns []string
	types   []string
	data    [][]any
	pos     int
}

// Columns are the result's column names.
func (r *Rows) Columns() []string { return r.columns }

// Types are the result's ClickHouse column types.
func (r *Rows) Types() []string { return r.types }

// Len is the number of rows.
func (r *Rows) Len() int { return len(r.data) }

// Next moves to the next row; it must be called before the first Scan.
func (r *Rows) Next() bool {
	if r.pos >= len(r.data) {
		return false
	}
	r.pos++
	return true
}

// Strings reads the rest of a one-column result as strings: a list of ids.
func (r *Rows) Strings() ([]string, error) {
	out := make([]string, 0, len(r.data)-r.pos)
	for r.Next() {
		var s string
		if err := r.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Values returns the current row's canonical values.
func (r *Rows) Values() []any { return r.data[r.pos-1] }

// Scan copies the current row into dest, one pointer per column. Supported
// pointers: *any, *string, *bool, *int, *int32, *int64, *uint8, *uint32,
// *uint64, *float64, *time.Time, *[]string, *[]int64, *[]uint64.
func (r *Rows) Scan(dest ...any) error {
	if r.pos == 0 || r.pos > len(r.data) {
		return fmt.Errorf("scan: no current row (call Next)")
	}
	row := r.data[r.pos-1]
	if len(dest) != len(row) {
		return fmt.Errorf("scan: %d destinations for %d columns", len(dest), len(row))
	}
	for i, d := range dest {
		if err := assign(d, row[i]); err != nil {
			return fmt.Errorf("scan column %q (%s): %w", r.columns[i], r.types[i], err)
		}
	}
	return nil
}

func assign(dest, src any) error {
	switch d := dest.(type) {
	case *any:
		*d = src
		return nil
	case *string:
		s, ok := src.(string)
		if !ok {
			return mismatch(dest, src)
		}
		*d = s
		return nil
	case *bool:
		switch s := src.(type) {
		case bool:
			*d = s
		case uint64: // UInt8 booleans, as 18.16 has no Bool type
			*d = s != 0
		case int64:
			*d = s != 0
		default:
			return mismatch(dest, src)
		}
		return nil
	case *time.Time:
		t, ok := src.(time.Time)
		if !ok {
			return mismatch(dest, src)
		}
		*d = t
		return nil
	case *float64:
		switch s := src.(type) {
		case float64:
			*d = s
		case int64:
			*d = float64(s)
		case uint64:
			*d = float64(s)
		default:
			return mismatch(dest, src)
		}
		return nil
	case *[]string:
		arr, ok := src.([]any)
		if !ok {
			return mismatch(dest, src)
		}
		out := make([]string, len(arr))
		for i, e := range arr {
			if err := assign(&out[i], e); err != nil {
				return err
			}
		}
		*d = out
		return nil
	case *[]int64:
		arr, ok := src.([]any)
		if !ok {
			return mismatch(dest, src)
		}
		out := make([]int64, len(arr))
		for i, e := range arr {
			if err := assign(&out[i], e); err != nil {
				return err
			}
		}
		*d = out
		return nil
	case *[]uint64:
		arr, ok := src.([]any)
		if !ok {
			return mismatch(dest, src)
		}
		out := make([]uint64, len(arr))
		for i, e := range arr {
			if err := assign(&out[i], e); err != nil {
				return err
			}
		}
		*d = out
		return nil
	}
	// Integer destinations, range-checked.
	rv := reflect.ValueOf(dest)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("destination %T is not a non-nil pointer", dest)
	}
	ev := rv.Elem()
	switch ev.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var n int64
		switch s := src.(type) {
		case int64:
			n = s
		case uint64:
			if s > math.MaxInt64 {
				return fmt.Errorf("value %d overflows %T", s, dest)
			}
			n = int64(s)
		default:
			return mismatch(dest, src)
		}
		if ev.OverflowInt(n) {
			return fmt.Errorf("value %d overflows %T", n, dest)
		}
		ev.SetInt(n)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var n uint64
		switch s := src.(type) {
		case uint64:
			n = s
		case int64:
			if s < 0 {
				return fmt.Errorf("negative value %d for %T", s, dest)
			}
			n = uint64(s)
		default:
			return mismatch(dest, src)
		}
		if ev.OverflowUint(n) {
			return fmt.Errorf("value %d overflows %T", n, dest)
		}
		ev.SetUint(n)
		return nil
	}
	return fmt.Errorf("unsupported destination %T", dest)
}

func mismatch(dest, src any) error {
	return fmt.Errorf("cannot scan %T into %T", src, dest)
}

// baseType strips the Nullable and LowCardinality wrappers.
func baseType(t string) (base string, nullable bool) {
	for {
		switch {
		case strings.HasPrefix(t, "Nullable(") && strings.HasSuffix(t, ")"):
			t, nullable = t[len("Nullable("):len(t)-1], true
		case strings.HasPrefix(t, "LowCardinality(") && strings.HasSuffix(t, ")"):
			t = t[len("LowCardinality(") : len(t)-1]
		default:
			return t, nullable
		}
	}
}

// fromJSON converts a value decoded (with UseNumber) from chDB's JSON output
// into the canonical Go type for the ClickHouse type t.
func fromJSON(t string, v any) (any, error) {
	base, _ := baseType(t)
	if v == nil {
		return nil, nil
	}
	switch {
	case strings.HasPrefix(base, "Array("):
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("expected an array for %s, got %T", t, v)
		}
		elem := base[len("Array(") : len(base)-1]
		out := make([]any, len(arr))
		for i, e := range arr {
			c, err := fromJSON(elem, e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case strings.HasPrefix(base, "Int"):
		return strconv.ParseInt(jsonScalar(v), 10, 64)
	case strings.HasPrefix(base, "UInt"):
		return strconv.ParseUint(jsonScalar(v), 10, 64)
	case strings.HasPrefix(base, "Float"):
		return strconv.ParseFloat(jsonScalar(v), 64)
	case base == "Bool":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("expected a bool for %s, got %T", t, v)
		}
		return b, nil
	case base == "Date" || base == "Date32":
		return time.ParseInLocation(time.DateOnly, jsonScalar(v), time.UTC)
	case strings.HasPrefix(base, "DateTime"):
		// Stickpoint declares DateTime('UTC') columns and binds times as
		// Unix seconds, so the text is UTC.
		return time.ParseInLocation("2006-01-02 15:04:05.999999999", jsonScalar(v), time.UTC)
	case base == "String" || strings.HasPrefix(base, "FixedString") || base == "UUID" || strings.HasPrefix(base, "Enum"):
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("expected a string for %s, got %T", t, v)
		}
		return s, nil
	}
	return v, nil
}

func jsonScalar(v any) string {
	switch x := v.(type) {
	case json.Number:
		return x.String()
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// fromDriver converts a value scanned by clickhouse-go into its canonical type.
func fromDriver(v any) any {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint()
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 { // FixedString as []byte
			return string(rv.Bytes())
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = fromDriver(rv.Index(i).Interface())
		}
		return out
	}
	if t, ok := rv.Interface().(time.Time); ok {
		return t.UTC()
	}
	if s, ok := rv.Interface().(fmt.Stringer); ok { // UUID, Decimal
		return s.String()
	}
	return rv.Interface()
}
