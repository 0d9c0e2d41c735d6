package specstore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/pkg/specstore"
	"github.com/stickpoint/stickpoint/pkg/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// lines is a kind of file: its lines, "bad" refused.
var lines = specstore.Kind[[]string]{
	Bucket: "stickpoint_test_lines", What: "lines file", Template: "a\nb", Default: []string{"a", "b"},
	Parse: func(src []byte) ([]string, error) {
		if string(src) == "bad" {
			return nil, errors.New("bad file")
		}
		return strings.Split(string(src), "\n"), nil
	},
}

// Each replica holds the files in memory: a put is read back at once where
// it was made, reaches the other replicas through their watch, and a
// replica started later loads it.
func TestFilesAreHeldCurrentOnEveryReplica(t *testing.T) {
	bus := testutil.NATS(t)
	ctx := t.Context()
	here, err := specstore.Open(ctx, bus, lines)
	if err != nil {
		t.Fatal(err)
	}
	there, err := specstore.Open(ctx, bus, lines)
	if err != nil {
		t.Fatal(err)
	}
	got, err := here.Get(ctx, "t1")
	if err != nil || got.Version != 0 || got.Source != "a\nb" {
		t.Fatalf("before any put: %+v %v", got, err)
	}
	if _, _, err := here.Put(ctx, "t1", []byte("x\ny")); err != nil {
		t.Fatal(err)
	}
	if got, err = here.Get(ctx, "t1"); err != nil || got.Version != 1 || strings.Join(got.Spec, ",") != "x,y" {
		t.Fatalf("the put, where it was made: %+v %v", got, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if got, err = there.Get(ctx, "t1"); err == nil && got.Version == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the put never reached the other replica: %+v %v", got, err)
		}
	}
	if err := there.Await(ctx, "t1", 1); err != nil {
		t.Errorf("await the version held: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := there.Await(short, "t1", 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("await a version never put: %v", err)
	}
	if got, err = there.Get(ctx, "t2"); err != nil || got.Version != 0 {
		t.Errorf("another tenant: %+v %v", got, err)
	}

	// Each Get parses its own copy: a caller that changes it changes no
	// one else's.
	got.Spec[0] = "changed"
	if again, _ := there.Get(ctx, "t1"); again.Spec[0] != "x" {
		t.Errorf("a caller's change leaked: %v", again.Spec)
	}

	later, err := specstore.Open(ctx, bus, lines)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = later.Get(ctx, "t1"); err != nil || got.Version != 1 {
		t.Errorf("a replica started after the put: %+v %v", got, err)
	}
	if _, _, err := later.Put(ctx, "t1", []byte("bad")); err == nil {
		t.Error("a bad file was stored")
	}
	if _, unchanged, err := later.Put(ctx, "t1", []byte("x\ny")); err != nil || !unchanged {
		t.Errorf("the same file again: unchanged %v, %v", unchanged, err)
	}
}
