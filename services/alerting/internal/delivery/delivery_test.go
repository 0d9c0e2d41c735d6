package delivery

import (
	"net/http"
	"testing"
	"time"

	"github.com/stickpoint/stickpoint/services/alerting/receiver"
)

func TestSignatureVerifiesAndRejectsTamperingAndReplays(t *testing.T) {
	now := time.Now()
	body := []byte(`{"delivery_id":"dlv_1"}`)
	h := Sign("whsec_test_123", now, body)
	if err := receiver.Verify("whsec_test_123", h, body, now); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	if err := receiver.Verify("whsec_test_123", h, []byte(`{"delivery_id":"dlv_2"}`), now); err == nil {
		t.Fatal("a changed body verified")
	}
	if err := receiver.Verify("whsec_other", h, body, now); err == nil {
		t.Fatal("the wrong secret verified")
	}
	if err := receiver.Verify("whsec_test_123", h, body, now.Add(10*time.Minute)); err == nil {
		t.Fatal("a 10-minute-old signature verified")
	}
}

func TestBackoffGrowsWithJitterAndHonoursRetryAfter(t *testing.T) {
	c := Config{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: time.Minute, Concurrency: 1}
	for n, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second} {
		d := c.Delay(n, 0)
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("delay after %d failures: %s, want %s ±20%%", n, d, base)
		}
	}
	if d := c.Delay(20, 0); d > time.Minute {
		t.Errorf("delay over the cap: %s", d)
	}
	if d := c.Delay(1, 30*time.Second); d != 30*time.Second {
		t.Errorf("Retry-After 30s: waited %s", d)
	}
	if d := c.Delay(1, time.Hour); d != time.Minute {
		t.Errorf("Retry-After over the cap: waited %s", d)
	}
	now := time.Now()
	if got := retryAfter("7", now); got != 7*time.Second {
		t.Errorf("Retry-After: 7 -> %s", got)
	}
	if got := retryAfter(now.Add(90*time.Second).UTC().Format(http.TimeFormat), now); got < 88*time.Second || got > 91*time.Second {
		t.Errorf("Retry-After as a date -> %s", got)
	}
}
