package testutil

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Post sends a JSON body to an ingest URL (a /v1/track or /v1/batch
// address) with the write key, and fails tb unless ingest answers 200.
func Post(tb testing.TB, url, writeKey, body string) {
	tb.Helper()
	req, err := http.NewRequestWithContext(tb.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(writeKey, "")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("POST %s answered %s: %s", url, resp.Status, answer)
	}
}
