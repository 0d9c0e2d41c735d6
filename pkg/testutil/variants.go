package testutil

import (
	"reflect"
	"testing"
	"time"
)

// Variants returns copies of v that each differ from it in one leaf: a
// string, number, bool or time at any depth of its structs, pointers and
// slices; a pointer set to nil (or, when nil, to a zero value); a slice one
// element longer. Each is keyed by the path to what changed.
//
// It tests a hand-written equality: one that tells every variant from v
// compares every field, including one added later, with no change to the
// test. Give v non-nil pointers and non-empty slices, so that what they
// hold is varied too. Unexported fields are left as they are.
func Variants[T any](tb testing.TB, v T) map[string]T {
	tb.Helper()
	out := map[string]T{}
	vary(tb, reflect.ValueOf(v), reflect.TypeOf(v).Name(), func(path string, changed reflect.Value) {
		out[path] = changed.Interface().(T)
	})
	return out
}

var timeType = reflect.TypeFor[time.Time]()

// vary calls emit with each variant of v, a new value of v's type.
func vary(tb testing.TB, v reflect.Value, path string, emit func(string, reflect.Value)) {
	tb.Helper()
	t := v.Type()
	n := reflect.New(t).Elem()
	if t == timeType {
		emit(path, reflect.ValueOf(v.Interface().(time.Time).Add(time.Millisecond)))
		return
	}
	switch t.Kind() {
	case reflect.String:
		n.SetString(v.String() + "x")
		emit(path, n)
	case reflect.Bool:
		n.SetBool(!v.Bool())
		emit(path, n)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n.SetInt(v.Int() + 1)
		emit(path, n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n.SetUint(v.Uint() + 1)
		emit(path, n)
	case reflect.Float32, reflect.Float64:
		n.SetFloat(v.Float() + 1)
		emit(path, n)
	case reflect.Struct:
		for i := range t.NumField() {
			if !t.Field(i).IsExported() {
				continue
			}
			vary(tb, v.Field(i), path+"."+t.Field(i).Name, func(p string, f reflect.Value) {
				c := reflect.New(t).Elem()
				c.Set(v)
				c.Field(i).Set(f)
				emit(p, c)
			})
		}
	case reflect.Pointer:
		if v.IsNil() {
			emit(path+" (set)", reflect.New(t.Elem()))
			return
		}
		emit(path+" (nil)", n)
		vary(tb, v.Elem(), path, func(p string, e reflect.Value) {
			c := reflect.New(t.Elem())
			c.Elem().Set(e)
			emit(p, c)
		})
	case reflect.Slice:
		longer := reflect.AppendSlice(reflect.MakeSlice(t, 0, v.Len()+1), v)
		emit(path+" (one more)", reflect.Append(longer, reflect.Zero(t.Elem())))
		if v.Len() > 0 {
			vary(tb, v.Index(0), path+"[0]", func(p string, e reflect.Value) {
				c := reflect.AppendSlice(reflect.MakeSlice(t, 0, v.Len()), v)
				c.Index(0).Set(e)
				emit(p, c)
			})
		}
	default:
		tb.Fatalf("%s: a %s; Variants can't vary it", path, t)
	}
}
