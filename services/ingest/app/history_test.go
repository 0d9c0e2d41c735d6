package app

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDecodeHistoryKeepsEachCallsOwnTime(t *testing.T) {
	lines := [][]byte{
		[]byte(`{"type":"track","userId":"u1","event":"Old","timestamp":"2019-03-01T10:00:00Z","sentAt":"2019-03-01T10:05:00Z","context":{"groupId":"acme"}}`),
		[]byte(`not json`),
		[]byte(`{"type":"track","userId":"u1","event":"No time"}`),
		[]byte(``),
		[]byte(`{"type":"track","event":"No user","timestamp":"2026-01-01T00:00:00Z"}`),
		[]byte(`{"type":"group","userId":"u1","groupId":"acme","timestamp":"2019-02-01T00:00:00Z","traits":{"plan":"pro"}}`),
	}
	evs, bad := DecodeHistory(lines, "t1")
	if len(evs) != 2 {
		t.Fatalf("decoded %d events, want 2: %+v", len(evs), evs)
	}
	old := evs[0]
	want := time.Date(2019, 3, 1, 10, 0, 0, 0, time.UTC)
	if old.Name != "Old" || !old.Timestamp.Equal(want) || !old.ReceivedAt.Equal(want) || old.TenantID != "t1" || old.SourceID != "backtest" {
		t.Errorf("a call 7 years old keeps its own time, uncorrected by sentAt: %+v", old)
	}
	wantBad := map[int]string{2: "not a JSON object", 3: "timestamp: required in a history", 5: "userId: every call needs a userId"}
	if len(bad) != len(wantBad) {
		t.Fatalf("refused %+v, want lines 2, 3 and 5", bad)
	}
	for _, b := range bad {
		if !strings.HasPrefix(b.Reason, wantBad[b.Line]) {
			t.Errorf("line %d refused for %q, want %q", b.Line, b.Reason, wantBad[b.Line])
		}
	}
}

// A history of several chunks, decoded at once: the events in the file's
// order, and each refused line named by its own number.
func TestDecodeHistoryAcrossChunks(t *testing.T) {
	var lines [][]byte
	badAt := map[int]bool{1: true, historyChunk: true, historyChunk + 1: true, 2*historyChunk + 7: true, 5000: true}
	for n := 1; n <= 5000; n++ {
		if badAt[n] {
			lines = append(lines, []byte(`{"type":"track"`))
			continue
		}
		lines = append(lines, []byte(fmt.Sprintf(`{"type":"track","userId":"u1","event":"E","messageId":"m%d","timestamp":"2026-01-01T00:00:00Z"}`, n)))
	}
	evs, bad := DecodeHistory(lines, "t1")
	if len(evs) != 5000-len(badAt) {
		t.Fatalf("decoded %d events, want %d", len(evs), 5000-len(badAt))
	}
	k := 0
	for n := 1; n <= 5000; n++ {
		if badAt[n] {
			continue
		}
		if want := fmt.Sprintf("m%d", n); evs[k].MessageID != want {
			t.Fatalf("event %d is %s, want %s: out of the file's order", k, evs[k].MessageID, want)
		}
		k++
	}
	var lineNos []int
	for _, b := range bad {
		lineNos = append(lineNos, b.Line)
	}
	if want := []int{1, historyChunk, historyChunk + 1, 2*historyChunk + 7, 5000}; !slices.Equal(lineNos, want) {
		t.Errorf("refused lines %v, want %v", lineNos, want)
	}
}
