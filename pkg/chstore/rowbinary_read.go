package chstore

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The embedded engine's results come as RowBinaryWithNamesAndTypes: a
// varint column count, the names, the types, then each row's values in
// their binary form. Decoding that costs a fraction of parsing the same
// rows as JSON text (each value a token, each number a string to
// convert), which was a tenth of a backfill's time. The values are the
// canonical ones Rows documents, as parseJSONCompact gives.

// errUnsupportedType says a result column has a type this decoder does not
// read (Enum, Decimal, Tuple, Map...): the query is read as JSON instead.
var errUnsupportedType = errors.New("no RowBinary decoder for the type")

// rowDecoder reads one value from b, returning it and the bytes after it.
type rowDecoder func(b []byte) (any, []byte, error)

var errShortRow = errors.New("result ends inside a value")

// parseRowBinary reads RowBinaryWithNamesAndTypes.
func parseRowBinary(out []byte) (*Rows, error) {
	r := &Rows{}
	if len(out) == 0 {
		return r, nil
	}
	n, b, err := readUvarint(out)
	if err != nil {
		return nil, fmt.Errorf("read result header: %w", err)
	}
	if n > uint64(len(b)) {
		return nil, fmt.Errorf("read result header: %d columns in %d bytes", n, len(b))
	}
	r.columns, r.types = make([]string, n), make([]string, n)
	for _, names := range [][]string{r.columns, r.types} {
		for i := range names {
			if names[i], b, err = readString(b); err != nil {
				return nil, fmt.Errorf("read result header: %w", err)
			}
		}
	}
	decs := make([]rowDecoder, n)
	for i, t := range r.types {
		if decs[i] = rowBinaryDecoder(t); decs[i] == nil {
			return nil, fmt.Errorf("result column %s %s: %w", r.columns[i], t, errUnsupportedType)
		}
	}
	for len(b) > 0 {
		row := make([]any, n)
		for i, dec := range decs {
			if row[i], b, err = dec(b); err != nil {
				return nil, fmt.Errorf("result column %s: %w", r.columns[i], err)
			}
		}
		r.data = append(r.data, row)
	}
	return r, nil
}

// rowBinaryDecoder is the decoder of a ClickHouse type, nil if it has none.
func rowBinaryDecoder(typ string) rowDecoder {
	typ = strings.TrimSpace(typ)
	if inner, ok := unwrap(typ, "LowCardinality("); ok {
		return rowBinaryDecoder(inner)
	}
	if inner, ok := unwrap(typ, "Nullable("); ok {
		dec := rowBinaryDecoder(inner)
		if dec == nil {
			return nil
		}
		return func(b []byte) (any, []byte, error) {
			if len(b) == 0 {
				return nil, b, errShortRow
			}
			if b[0] == 1 {
				return nil, b[1:], nil
			}
			return dec(b[1:])
		}
	}
	if inner, ok := unwrap(typ, "Array("); ok {
		dec := rowBinaryDecoder(inner)
		if dec == nil {
			return nil
		}
		return func(b []byte) (any, []byte, error) {
			n, b, err := readUvarint(b)
			if err != nil {
				return nil, b, err
			}
			if n > uint64(len(b)) { // every element takes a byte at least
				return nil, b, errShortRow
			}
			out := make([]any, n)
			for i := range out {
				if out[i], b, err = dec(b); err != nil {
					return nil, b, err
				}
			}
			return out, b, nil
		}
	}
	if typ == "DateTime" || strings.HasPrefix(typ, "DateTime(") {
		return fixed(4, func(v []byte) any { return time.Unix(int64(binary.LittleEndian.Uint32(v)), 0).UTC() })
	}
	if args, ok := unwrap(typ, "DateTime64("); ok {
		precision, err := strconv.Atoi(strings.TrimSpace(strings.Split(args, ",")[0]))
		if err != nil || precision < 0 || precision > 9 {
			return nil
		}
		scale := int64(math.Pow10(precision))
		return fixed(8, func(v []byte) any {
			ticks := int64(binary.LittleEndian.Uint64(v))
			sec, frac := ticks/scale, ticks%scale
			if frac < 0 {
				sec, frac = sec-1, frac+scale
			}
			return time.Unix(sec, frac*(1e9/scale)).UTC()
		})
	}
	if args, ok := unwrap(typ, "FixedString("); ok {
		n, err := strconv.Atoi(args)
		if err != nil || n < 0 {
			return nil
		}
		return fixed(n, func(v []byte) any { return string(v) })
	}
	switch typ {
	case "String":
		return func(b []byte) (any, []byte, error) {
			s, rest, err := readString(b)
			return s, rest, err
		}
	case "UUID":
		return fixed(16, func(v []byte) any {
			var raw [16]byte
			binary.BigEndian.PutUint64(raw[:8], binary.LittleEndian.Uint64(v[:8]))
			binary.BigEndian.PutUint64(raw[8:], binary.LittleEndian.Uint64(v[8:]))
			h := hex.EncodeToString(raw[:])
			return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		})
	case "Date":
		return fixed(2, func(v []byte) any { return time.Unix(int64(binary.LittleEndian.Uint16(v))*86400, 0).UTC() })
	case "Date32":
		return fixed(4, func(v []byte) any { return time.Unix(int64(int32(binary.LittleEndian.Uint32(v)))*86400, 0).UTC() })
	case "Bool":
		return fixed(1, func(v []byte) any { return v[0] != 0 })
	case "Float32":
		return fixed(4, func(v []byte) any { return float64(math.Float32frombits(binary.LittleEndian.Uint32(v))) })
	case "Float64":
		return fixed(8, func(v []byte) any { return math.Float64frombits(binary.LittleEndian.Uint64(v)) })
	case "UInt8":
		return fixed(1, func(v []byte) any { return uint64(v[0]) })
	case "UInt16":
		return fixed(2, func(v []byte) any { return uint64(binary.LittleEndian.Uint16(v)) })
	case "UInt32":
		return fixed(4, func(v []byte) any { return uint64(binary.LittleEndian.Uint32(v)) })
	case "UInt64":
		return fixed(8, func(v []byte) any { return binary.LittleEndian.Uint64(v) })
	case "Int8":
		return fixed(1, func(v []byte) any { return int64(int8(v[0])) })
	case "Int16":
		return fixed(2, func(v []byte) any { return int64(int16(binary.LittleEndian.Uint16(v))) })
	case "Int32":
		return fixed(4, func(v []byte) any { return int64(int32(binary.LittleEndian.Uint32(v))) })
	case "Int64":
		return fixed(8, func(v []byte) any { return int64(binary.LittleEndian.Uint64(v)) })
	}
	return nil
}

// fixed decodes a value of n bytes with f.
func fixed(n int, f func(v []byte) any) rowDecoder {
	return func(b []byte) (any, []byte, error) {
		if len(b) < n {
			return nil, b, errShortRow
		}
		return f(b[:n]), b[n:], nil
	}
}

func readUvarint(b []byte) (uint64, []byte, error) {
	n, size := binary.Uvarint(b)
	if size <= 0 {
		return 0, b, errShortRow
	}
	return n, b[size:], nil
}

func readString(b []byte) (string, []byte, error) {
	n, b, err := readUvarint(b)
	if err != nil {
		return "", b, err
	}
	if n > uint64(len(b)) {
		return "", b, errShortRow
	}
	return string(b[:n]), b[n:], nil
}
