// Package config is Stickpoint's one configuration loader. A service's
// config is a struct whose fields carry json tags; Load fills it, over the
// defaults already in it, from a JSON file, then environment variables,
// then --set overrides. Every key is the field's json path ("nats.url"),
// its environment variable is the path in upper case with a prefix
// (STICKPOINT_NATS_URL), and every error names the key. The caller then
// runs its Validate.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sources are where Load reads values from, in increasing precedence.
type Sources struct {
	// File is a JSON file; empty means none.
	File string
	// EnvPrefix prefixes environment variables, e.g. "STICKPOINT".
	EnvPrefix string
	// Env is the environment, as os.Environ returns it.
	Env []string
	// Set holds "key=value" overrides (the --set flag).
	Set []string
}

// Key describes one configuration key.
type Key struct {
	Path  string // nats.url
	Env   string // STICKPOINT_NATS_URL
	Type  string // string, bool, int, float, duration, list
	Value string // current value
}

// Load fills cfg, a pointer to a struct, from src.
func Load(cfg any, src Sources) error {
	fields, err := leaves(cfg)
	if err != nil {
		return err
	}
	if src.File != "" {
		b, err := os.ReadFile(src.File)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		var doc map[string]any
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return fmt.Errorf("config file %s: %w", src.File, err)
		}
		flat := map[string]any{}
		flatten("", doc, flat)
		for _, path := range sortedKeys(flat) {
			f, ok := fields[path]
			if !ok {
				return fmt.Errorf("config file %s: unknown key %q", src.File, path)
			}
			if err := setValue(f, path, flat[path]); err != nil {
				return fmt.Errorf("config file %s: %w", src.File, err)
			}
		}
	}
	if src.EnvPrefix != "" {
		env := map[string]string{}
		for _, kv := range src.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		for _, path := range sortedKeys(fields) {
			if v, ok := env[envName(src.EnvPrefix, path)]; ok {
				if err := setValue(fields[path], path, v); err != nil {
					return fmt.Errorf("environment %s: %w", envName(src.EnvPrefix, path), err)
				}
			}
		}
	}
	for _, kv := range src.Set {
		path, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--set %q: want key=value", kv)
		}
		f, ok := fields[path]
		if !ok {
			return fmt.Errorf("--set: unknown key %q", path)
		}
		if err := setValue(f, path, v); err != nil {
			return fmt.Errorf("--set: %w", err)
		}
	}
	return nil
}

// Keys lists every key of cfg with its current value, for `--help-config`.
func Keys(cfg any, envPrefix string) []Key {
	fields, err := leaves(cfg)
	if err != nil {
		return nil
	}
	var out []Key
	for _, path := range sortedKeys(fields) {
		f := fields[path]
		out = append(out, Key{Path: path, Env: envName(envPrefix, path), Type: typeName(f), Value: format(f)})
	}
	return out
}

func envName(prefix, path string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func flatten(prefix string, v any, out map[string]any) {
	if m, ok := v.(map[string]any); ok {
		for k, sub := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, sub, out)
		}
		return
	}
	out[prefix] = v
}

var durationType = reflect.TypeFor[time.Duration]()

// leaves maps each settable leaf field's json path to its value.
func leaves(cfg any) (map[string]reflect.Value, error) {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil, errors.New("config: Load needs a pointer to a struct")
	}
	out := map[string]reflect.Value{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
				walk(prefix, v.Field(i)) // an embedded struct's keys are its parent's
				continue
			}
			if !sf.IsExported() || name == "-" || name == "" {
				continue
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != durationType {
				walk(path, fv)
				continue
			}
			out[path] = fv
		}
	}
	walk("", v.Elem())
	return out, nil
}

func setValue(f reflect.Value, path string, raw any) error {
	if f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String {
		var list []string
		switch x := raw.(type) {
		case []any:
			for _, e := range x {
				list = append(list, fmt.Sprint(e))
			}
		case string:
			for _, p := range strings.Split(x, ",") {
				if p = strings.TrimSpace(p); p != "" {
					list = append(list, p)
				}
			}
		default:
			return fmt.Errorf("%s: want a list of strings, got %v", path, raw)
		}
		f.Set(reflect.ValueOf(list))
		return nil
	}
	s := fmt.Sprint(raw)
	if _, isList := raw.([]any); isList {
		return fmt.Errorf("%s: want a single value, got a list", path)
	}
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: invalid duration %q (use e.g. 500ms, 2m, 1h)", path, s)
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: invalid boolean %q", path, s)
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || f.OverflowInt(n) {
			return fmt.Errorf("%s: invalid integer %q", path, s)
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || f.OverflowUint(n) {
			return fmt.Errorf("%s: invalid unsigned integer %q", path, s)
		}
		f.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: invalid number %q", path, s)
		}
		f.SetFloat(n)
	default:
		return fmt.Errorf("%s: unsupported field type %s", path, f.Type())
	}
	return nil
}

func typeName(f reflect.Value) string {
	if f.Type() == durationType {
		return "duration"
	}
	switch f.Kind() {
	case reflect.Slice:
		return "list"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "int"
	case reflect.Float32, reflect.Float64:
		return "float"
	}
	return f.Kind().String()
}

func format(f reflect.Value) string {
	if f.Type() == durationType {
		return time.Duration(f.Int()).String()
	}
	if f.Kind() == reflect.Slice {
		parts := make([]string, f.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(f.Index(i).Interface())
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(f.Interface())
}
