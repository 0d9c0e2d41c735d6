package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stickpoint/stickpoint/pkg/sdk"
)

// runSend sends a file of Segment calls, one JSON object per line.
func sendCommand(env environ) *cobra.Command {
	return leaf("send FILE", "Send a file of Segment calls, one JSON object per line (- for standard input), with a progress bar", -1, func(fs *pflag.FlagSet) runner {
		url := fs.String("url", envOr(env, "STICKPOINT_URL", "http://127.0.0.1:8080"), "ingest HTTP address (env STICKPOINT_URL)")
		key := fs.String("write-key", env.getenv("STICKPOINT_WRITE_KEY"), "write key (env STICKPOINT_WRITE_KEY)")
		quiet := fs.Bool("quiet", false, "no progress bar")
		return func(ctx context.Context, pos []string) error {
			if len(pos) != 1 {
				return fmt.Errorf("stickpoint send FILE: one file of JSON lines (- for standard input): %w", errUsage)
			}
			if *key == "" {
				return fmt.Errorf("no write key: pass --write-key or set STICKPOINT_WRITE_KEY (stickpoint dev prints it): %w", errUsage)
			}
			in, total, err := openLines(pos[0])
			if err != nil {
				return err
			}
			defer func() { _ = in.Close() }()

			var failed atomic.Int64
			var firstErr atomic.Value
			refused := &refusals{lines: map[uint64]int{}}
			client, err := sdk.New(sdk.Config{Endpoint: *url, WriteKey: *key, BatchSize: 500, FlushInterval: 200 * time.Millisecond,
				OnError: func(err error, n int) {
					failed.Add(int64(n))
					firstErr.CompareAndSwap(nil, err.Error())
				},
				OnReject: refused.add})
			if err != nil {
				return err
			}
			bar := newProgress(env.stderr, total, *quiet)
			var queued, skipped int64
			var skipNotes []string
			sc := bufio.NewScanner(in)
			sc.Buffer(make([]byte, 64<<10), sdk.MaxEventBytes*2)
			line := 0
			for sc.Scan() {
				line++
				raw := strings.TrimSpace(sc.Text())
				if raw == "" {
					continue
				}
				refused.remember(raw, line)
				for {
					err = client.Raw(json.RawMessage(raw))
					if !errors.Is(err, sdk.ErrQueueFull) {
						break
					}
					select { // the file can wait: back off instead of dropping
					case <-time.After(10 * time.Millisecond):
					case <-ctx.Done():
						_ = client.Close()
						return ctx.Err()
					}
				}
				if err != nil {
					skipped++
					if len(skipNotes) < 5 {
						skipNotes = append(skipNotes, fmt.Sprintf("line %d: %v", line, err))
					}
					continue
				}
				queued++
				bar.set(queued)
			}
			if err := sc.Err(); err != nil {
				_ = client.Close()
				return fmt.Errorf("read %s at line %d: %w", pos[0], line+1, err)
			}
			closeErr := client.Close()
			bar.done(queued)
			rejected := refused.sorted()
			delivered := queued - failed.Load() - int64(len(rejected))
			fmt.Fprintf(env.stdout, "sent %d events", delivered)
			if len(rejected) > 0 {
				fmt.Fprintf(env.stdout, ", %d rejected", len(rejected))
			}
			if skipped > 0 {
				fmt.Fprintf(env.stdout, ", skipped %d invalid lines", skipped)
			}
			if failed.Load() > 0 {
				fmt.Fprintf(env.stdout, ", %d not delivered", failed.Load())
			}
			fmt.Fprintln(env.stdout)
			for _, n := range skipNotes {
				fmt.Fprintln(env.stderr, "  "+n)
			}
			for _, r := range rejected {
				fmt.Fprintf(env.stderr, "  line %d: %s (%s)\n", r.line, r.why, r.code)
			}
			switch {
			case failed.Load() > 0:
				return fmt.Errorf("%d events were not delivered: %v", failed.Load(), firstErr.Load())
			case closeErr != nil:
				return closeErr
			case len(rejected) > 0:
				return fmt.Errorf("%d events were rejected (listed above by line)", len(rejected))
			case skipped > 0:
				return fmt.Errorf("%d lines were skipped", skipped)
			}
			return nil
		}
	})
}

// refusals maps the calls the server refused back to their lines: the SDK
// hands back each call's bytes, and they are the line's, so a hash of the
// line finds it (8 bytes a line, not the file's text). Identical lines are
// one event (same bytes, same messageId): the first line stands for them.
type refusals struct {
	mu    sync.Mutex
	lines map[uint64]int
	got   []refusal
}

type refusal struct {
	line      int
	why, code string
}

func lineHash(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

func (r *refusals) remember(raw string, line int) {
	h := lineHash([]byte(raw))
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.lines[h]; !ok {
		r.lines[h] = line
	}
}

func (r *refusals) add(rej sdk.Rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	field := rej.Field
	if i := strings.IndexByte(field, ']'); strings.HasPrefix(field, "batch[") && i >= 0 {
		field = strings.TrimPrefix(field[i+1:], ".")
	}
	why := rej.Message
	if field != "" {
		why = field + ": " + why
	}
	r.got = append(r.got, refusal{line: r.lines[lineHash(rej.Call)], why: why, code: rej.Code})
}

func (r *refusals) sorted() []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	slices.SortFunc(r.got, func(a, b refusal) int { return a.line - b.line })
	return r.got
}

func envOr(env environ, key, def string) string {
	if v := env.getenv(key); v != "" {
		return v
	}
	return def
}

// openLines opens the file and counts its non-empty lines for the bar
// (-1 for standard input, which can't be read twice).
func openLines(path string) (io.ReadCloser, int64, error) {
	if path == "-" {
		return io.NopCloser(os.Stdin), -1, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	var n int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), sdk.MaxEventBytes*2)
	for sc.Scan() {
		if len(strings.TrimSpace(sc.Text())) > 0 {
			n++
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// progress draws "[#####.....]  52%  5,200/10,000 events  3,100/s" on a
// terminal, redrawn at most ten times a second.
type progress struct {
	w     io.Writer
	total int64
	on    bool
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, total int64, quiet bool) *progress {
	on := !quiet
	if f, ok := w.(*os.File); ok {
		st, err := f.Stat()
		on = on && err == nil && st.Mode()&os.ModeCharDevice != 0
	} else {
		on = false
	}
	return &progress{w: w, total: total, on: on, start: time.Now()}
}

func (p *progress) set(n int64) {
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.draw(n)
}

func (p *progress) draw(n int64) {
	rate := float64(n) / max(time.Since(p.start).Seconds(), 0.001)
	if p.total > 0 {
		const width = 30
		filled := int(float64(width) * float64(n) / float64(p.total))
		fmt.Fprintf(p.w, "\r[%s%s] %3d%%  %d/%d events  %.0f/s ", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
			100*n/p.total, n, p.total, rate)
		return
	}
	fmt.Fprintf(p.w, "\r%d events  %.0f/s ", n, rate)
}

func (p *progress) done(n int64) {
	if p.on {
		p.draw(n)
		fmt.Fprintln(p.w)
	}
}
