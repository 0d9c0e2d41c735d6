package chstore

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// RowSource gives an insert's rows one at a time, through a RowWriter, in
// the order of the insert's columns. Store.InsertFrom takes one: on the
// embedded engine the typed RowWriter methods write straight into the
// binary insert, so no value is boxed into an interface, which counts at a
// hundred thousand rows a second. Insert's [][]any is simpler where rows are
// few.
type RowSource interface {
	Len() int
	WriteRow(i int, w RowWriter)
}

// RowWriter takes one row's values in column order. The typed methods need
// a column of their type (String: String or LowCardinality(String); Time:
// DateTime; UInt16, UInt64: the same type); Value takes any value Insert
// takes.
type RowWriter interface {
	String(s string)
	Time(t time.Time)
	UInt16(v uint16)
	UInt64(v uint64)
	Value(v any)
}

// anyRows is Insert's rows as a RowSource.
type anyRows [][]any

func (r anyRows) Len() int { return len(r) }

func (r anyRows) WriteRow(i int, w RowWriter) {
	for _, v := range r[i] {
		w.Value(v)
	}
}

// valueKind is what a typed RowWriter method writes.
type valueKind uint8

const (
	kindOther valueKind = iota
	kindString
	kindDateTime
	kindUInt16
	kindUInt64
)

func kindOf(typ string) valueKind {
	if inner, ok := unwrap(typ, "LowCardinality("); ok {
		typ = inner
	}
	switch {
	case typ == "String":
		return kindString
	case typ == "DateTime" || strings.HasPrefix(typ, "DateTime("):
		return kindDateTime
	case typ == "UInt16":
		return kindUInt16
	case typ == "UInt64":
		return kindUInt64
	}
	return kindOther
}

// binaryWriter encodes rows as RowBinary (the embedded engine's inserts).
type binaryWriter struct {
	buf            []byte
	columns, types []string
	encs           []rowEncoder
	kinds          []valueKind
	row, col       int
	err            error
}

func newBinaryWriter(buf []byte, columns, types []string, encs []rowEncoder) *binaryWriter {
	w := &binaryWriter{buf: buf, columns: columns, types: types, encs: encs, kinds: make([]valueKind, len(types))}
	for i, t := range types {
		w.kinds[i] = kindOf(t)
	}
	return w
}

// startRow begins row i; endRow checks it had every column.
func (w *binaryWriter) startRow(i int) { w.row, w.col = i, 0 }

func (w *binaryWriter) endRow() {
	if w.err == nil && w.col != len(w.columns) {
		w.err = fmt.Errorf("row %d has %d values for %d columns", w.row, w.col, len(w.columns))
	}
}

// typed reports whether the next value may be written as k, recording an
// error if not, and moves to the column after it.
func (w *binaryWriter) typed(k valueKind, method string) bool {
	defer func() { w.col++ }()
	if w.err != nil {
		return false
	}
	if w.col >= len(w.kinds) {
		return false // counted; endRow reports it
	}
	if w.kinds[w.col] != k {
		w.err = fmt.Errorf("row %d column %s (%s): can't be written with %s", w.row, w.columns[w.col], w.types[w.col], method)
		return false
	}
	return true
}

func (w *binaryWriter) String(s string) {
	if w.typed(kindString, "String") {
		w.buf = binary.AppendUvarint(w.buf, uint64(len(s)))
		w.buf = append(w.buf, s...)
	}
}

func (w *binaryWriter) Time(t time.Time) {
	if w.typed(kindDateTime, "Time") {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(min(max(t.Unix(), 0), maxDateTime)))
	}
}

func (w *binaryWriter) UInt16(v uint16) {
	if w.typed(kindUInt16, "UInt16") {
		w.buf = binary.LittleEndian.AppendUint16(w.buf, v)
	}
}

func (w *binaryWriter) UInt64(v uint64) {
	if w.typed(kindUInt64, "UInt64") {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, v)
	}
}

func (w *binaryWriter) Value(v any) {
	defer func() { w.col++ }()
	if w.err != nil {
		return
	}
	if w.col >= len(w.encs) {
		return // counted; endRow reports it
	}
	var err error
	if w.buf, err = w.encs[w.col](w.buf, v); err != nil {
		w.err = fmt.Errorf("row %d column %s (%s): %w", w.row, w.columns[w.col], w.types[w.col], err)
	}
}

// valuesWriter collects a row's values as Insert's []any: for the server
// engine's batches, and the embedded engine's text fallback.
type valuesWriter struct{ row []any }

func (w *valuesWriter) String(s string)  { w.row = append(w.row, s) }
func (w *valuesWriter) Time(t time.Time) { w.row = append(w.row, t) }
func (w *valuesWriter) UInt16(v uint16)  { w.row = append(w.row, v) }
func (w *valuesWriter) UInt64(v uint64)  { w.row = append(w.row, v) }
func (w *valuesWriter) Value(v any)      { w.row = append(w.row, v) }

// collect reads src into rows of values.
func collect(src RowSource) [][]any {
	rows := make([][]any, src.Len())
	for i := range rows {
		w := valuesWriter{}
		src.WriteRow(i, &w)
		rows[i] = w.row
	}
	return rows
}
