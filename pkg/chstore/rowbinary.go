package chstore

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"
)

// The embedded engine inserts RowBinary through a file: chDB parses it at
// about a third of the cost of inline text (DESIGN.md, "Storage"), and it
// can't be sent inline, where chDB ends the data at the first empty line
// (binary data holds 0A 0A). A rowEncoder writes one column's values.
type rowEncoder func(b []byte, v any) ([]byte, error)

// rowBinaryEncoder returns the encoder of a ClickHouse column type, or
// false for a type it doesn't know (the insert then falls back to text).
func rowBinaryEncoder(typ string) (rowEncoder, bool) {
	typ = strings.TrimSpace(typ)
	if inner, ok := unwrap(typ, "LowCardinality("); ok {
		return rowBinaryEncoder(inner)
	}
	if inner, ok := unwrap(typ, "Nullable("); ok {
		enc, ok := rowBinaryEncoder(inner)
		if !ok {
			return nil, false
		}
		return func(b []byte, v any) ([]byte, error) {
			if v == nil {
				return append(b, 1), nil
			}
			return enc(append(b, 0), v)
		}, true
	}
	if inner, ok := unwrap(typ, "Array("); ok {
		enc, ok := rowBinaryEncoder(inner)
		if !ok {
			return nil, false
		}
		return func(b []byte, v any) ([]byte, error) { return appendArray(b, v, enc) }, true
	}
	if typ == "DateTime" || strings.HasPrefix(typ, "DateTime(") {
		return appendDateTime, true
	}
	switch typ {
	case "String":
		return appendString, true
	case "UUID":
		return appendUUID, true
	case "Date":
		return func(b []byte, v any) ([]byte, error) {
			t, ok := v.(time.Time)
			if !ok {
				return b, fmt.Errorf("a Date needs a time.Time, not %T", v)
			}
			days := min(max(t.Unix()/86400, 0), math.MaxUint16)
			return binary.LittleEndian.AppendUint16(b, uint16(days)), nil
		}, true
	case "Float32":
		return func(b []byte, v any) ([]byte, error) {
			f, err := toFloat(v)
			return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f))), err
		}, true
	case "Float64":
		return func(b []byte, v any) ([]byte, error) {
			f, err := toFloat(v)
			return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), err
		}, true
	}
	for _, it := range intTypes {
		if typ == it.name {
			return it.encoder(), true
		}
	}
	return nil, false
}

func unwrap(typ, prefix string) (string, bool) {
	if strings.HasPrefix(typ, prefix) && strings.HasSuffix(typ, ")") {
		return typ[len(prefix) : len(typ)-1], true
	}
	return "", false
}

type intType struct {
	name     string
	bytes    int
	signed   bool
	min, max int64
	umax     uint64
}

var intTypes = []intType{
	{name: "UInt8", bytes: 1, umax: math.MaxUint8}, {name: "Bool", bytes: 1, umax: 1},
	{name: "UInt16", bytes: 2, umax: math.MaxUint16}, {name: "UInt32", bytes: 4, umax: math.MaxUint32},
	{name: "UInt64", bytes: 8, umax: math.MaxUint64},
	{name: "Int8", bytes: 1, signed: true, min: math.MinInt8, max: math.MaxInt8},
	{name: "Int16", bytes: 2, signed: true, min: math.MinInt16, max: math.MaxInt16},
	{name: "Int32", bytes: 4, signed: true, min: math.MinInt32, max: math.MaxInt32},
	{name: "Int64", bytes: 8, signed: true, min: math.MinInt64, max: math.MaxInt64},
}

func (it intType) encoder() rowEncoder {
	return func(b []byte, v any) ([]byte, error) {
		var bits uint64
		if it.signed {
			n, err := toInt(v)
			if err != nil {
				return b, err
			}
			if n < it.min || n > it.max {
				return b, fmt.Errorf("%d is out of %s's range", n, it.name)
			}
			bits = uint64(n)
		} else {
			n, err := toUint(v)
			if err != nil {
				return b, err
			}
			if n > it.umax {
				return b, fmt.Errorf("%d is out of %s's range", n, it.name)
			}
			bits = n
		}
		for i := range it.bytes {
			b = append(b, byte(bits>>(8*i)))
		}
		return b, nil
	}
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d is out of Int64's range", x)
		}
		return int64(x), nil
	case uint:
		return toInt(uint64(x))
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("an integer column needs an integer, not %T", v)
}

func toUint(v any) (uint64, error) {
	switch x := v.(type) {
	case uint64:
		return x, nil
	case uint:
		return uint64(x), nil
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	}
	n, err := toInt(v)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative in an unsigned column", n)
	}
	return uint64(n), nil
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	}
	n, err := toInt(v)
	return float64(n), err
}

func appendString(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	case []byte:
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), nil
	}
	return b, fmt.Errorf("a String needs a string, not %T", v)
}

// appendDateTime writes Unix seconds, clamped to DateTime's range as the
// text binder does.
func appendDateTime(b []byte, v any) ([]byte, error) {
	t, ok := v.(time.Time)
	if !ok {
		return b, fmt.Errorf("a DateTime needs a time.Time, not %T", v)
	}
	return binary.LittleEndian.AppendUint32(b, uint32(min(max(t.Unix(), 0), maxDateTime))), nil
}

// appendUUID writes a UUID given as text the way ClickHouse holds it: two
// little-endian UInt64 halves.
func appendUUID(b []byte, v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return b, fmt.Errorf("a UUID needs its text, not %T", v)
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		return b, fmt.Errorf("%q is not a UUID", s)
	}
	for _, half := range [][]byte{raw[:8], raw[8:]} {
		for i := 7; i >= 0; i-- {
			b = append(b, half[i])
		}
	}
	return b, nil
}

func appendArray(b []byte, v any, enc rowEncoder) ([]byte, error) {
	switch x := v.(type) {
	case []string:
		return appendElems(b, x, enc)
	case []int64:
		return appendElems(b, x, enc)
	case []uint64:
		return appendElems(b, x, enc)
	case []any:
		return appendElems(b, x, enc)
	}
	return b, fmt.Errorf("an Array needs a slice, not %T", v)
}

func appendElems[T any](b []byte, xs []T, enc rowEncoder) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(xs)))
	var err error
	for _, x := range xs {
		if b, err = enc(b, x); err != nil {
			return b, err
		}
	}
	return b, nil
}
