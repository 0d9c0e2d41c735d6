package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/stickpoint/stickpoint/pkg/accounts"
	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/parallel"
	"github.com/stickpoint/stickpoint/services/ingest/internal/segment"
	"github.com/stickpoint/stickpoint/services/ingest/internal/store"
)

// HistoryRejection is a line of a history file that is not a valid call.
type HistoryRejection struct {
	Line   int
	Reason string
}

// historyChunk is how many lines are decoded as one batch.
const historyChunk = 2000

// DecodeHistory reads a history file's lines (Segment calls, one JSON
// object per line: the `stickpoint send` format) for a backtest of tenant,
// with the same decoder and limits as the HTTP API, but no past limit. A
// history has no receive time to correct a clock against: each event's
// time is its own timestamp (a sentAt is kept, not applied), and it is
// taken as received then. A call without a timestamp is refused: it would
// take the time it is read.
func DecodeHistory(lines [][]byte, tenant string) ([]events.Event, []HistoryRejection) {
	lim := segment.DefaultLimits()
	lim.PastLimit, lim.FutureSkew = 200*365*24*time.Hour, 200*365*24*time.Hour
	lim.MaxBatchEvents = historyChunk
	received := time.Now()
	// The chunks are decoded on every core, each on its own, and joined
	// in order: decoding a million lines on one was 5 s of a backtest.
	type decoded struct {
		events []events.Event
		bad    []HistoryRejection
	}
	chunks := make([]decoded, (len(lines)+historyChunk-1)/historyChunk)
	parallel.For(len(chunks), 1, func(c int) {
		start := c * historyChunk
		chunks[c].events, chunks[c].bad = decodeChunk(lines[start:min(start+historyChunk, len(lines))], start, tenant, received, lim)
	})
	// Sized once: a history can hold millions of events, and growing a
	// slice of them by doubling copies and zeroes hundreds of megabytes.
	out := make([]events.Event, 0, len(lines))
	var bad []HistoryRejection
	for _, c := range chunks {
		out, bad = append(out, c.events...), append(bad, c.bad...)
	}
	return out, bad
}

// decodeChunk decodes the lines of a history that start at line start+1.
func decodeChunk(lines [][]byte, start int, tenant string, received time.Time, lim segment.Limits) (out []events.Event, bad []HistoryRejection) {
	out = make([]events.Event, 0, len(lines))
	var body bytes.Buffer
	var lineOf []int // the line of each call in the batch
	body.WriteString(`{"batch":[`)
	for i, l := range lines {
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		if !json.Valid(l) {
			bad = append(bad, HistoryRejection{Line: start + i + 1, Reason: "not a JSON object"})
			continue
		}
		if len(lineOf) > 0 {
			body.WriteByte(',')
		}
		body.Write(l)
		lineOf = append(lineOf, start+i+1)
	}
	body.WriteString(`]}`)
	if len(lineOf) == 0 {
		return out, bad
	}
	req, err := segment.Decode("batch", body.Bytes(), received, lim)
	if err != nil { // a limit of the whole batch: say so on its first line
		bad = append(bad, HistoryRejection{Line: lineOf[0], Reason: err.Error()})
		return out, bad
	}
	rejected := map[int]bool{}
	for _, r := range req.Rejected {
		rejected[r.Index] = true
		// The batch is the decoder's, not the file's: name the field
		// within the line.
		reason := r.Err.Error()
		if _, rest, ok := strings.Cut(reason, "]."); ok && strings.HasPrefix(reason, "batch[") {
			reason = rest
		}
		bad = append(bad, HistoryRejection{Line: lineOf[r.Index], Reason: reason})
	}
	k := 0
	for i := range lineOf {
		if rejected[i] {
			continue
		}
		e := req.Events[k]
		k++
		if e.OriginalTimestamp.IsZero() {
			bad = append(bad, HistoryRejection{Line: lineOf[i], Reason: "timestamp: required in a history"})
			continue
		}
		e.TenantID, e.SourceID = tenant, "backtest"
		e.Timestamp, e.ReceivedAt = e.OriginalTimestamp, e.OriginalTimestamp
		out = append(out, e)
	}
	return out, bad
}

// WriteHistory stores events as the writer does (each messageId once,
// attributed to accounts by the group calls before them, noticed on
// STORED), synchronously: a backtest's step is stored before it is
// evaluated. The writer's consumers must not run (a backtest never calls
// Run).
func (s *Service) WriteHistory(ctx context.Context, evs []events.Event) error {
	if s.writer == nil {
		return fmt.Errorf("ingest.writer.enabled: a backtest needs the writer")
	}
	return s.writer.WriteEvents(ctx, evs)
}

// UseMemory makes the writer store in memory instead of ClickHouse (a
// backtest: no insert per step of its clock), and hand every event it
// stores to h, where the backtest's services read them. With keep, the
// events are kept for SaveMemory.
func (s *Service) UseMemory(h *accounts.History, keep bool) {
	if s.writer != nil {
		s.memory = store.NewMemory()
		s.memory.Keep = keep
		s.writer.UseStore(s.memory)
		s.writer.Stored = h.Add
	}
}

// SaveMemory writes the events kept in memory to ClickHouse: a backtest
// whose data folder is kept.
func (s *Service) SaveMemory(ctx context.Context) error {
	if s.memory == nil {
		return nil
	}
	return s.memory.Saved(ctx, s.store)
}

// SetClock sets the writer's clock: a backtest's simulated one.
func (s *Service) SetClock(now func() time.Time) {
	if s.writer != nil {
		s.writer.SetClock(now)
	}
}

// LoadWriter loads the writer's dedup filter; Run does it before the
// consumers start, and a backtest before its first WriteHistory.
func (s *Service) LoadWriter(ctx context.Context) error {
	if s.writer == nil {
		return nil
	}
	return s.writer.Load(ctx)
}
