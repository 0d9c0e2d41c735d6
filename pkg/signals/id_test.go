package signals

import "testing"

// TestIDIsStable pins ID's output, the first 16 bytes of the SHA-256 of
// "4:acme5:acc-1..." as Python's hashlib gives them: a signal emitted again
// after an upgrade (a crash between publishing and storing the state) must
// keep its id for the stream and the signals table to drop the repeat.
func TestIDIsStable(t *testing.T) {
	for _, c := range []struct {
		parts [4]string
		want  string
	}{
		{[4]string{"acme", "acc-1", "milestone_reached", "onboarding/connected"}, "2ec10dec753dd657cd1e7f36b56a2a9f"},
		{[4]string{"", "", "", ""}, "8538098a725acce2a400276987f13475"},
		// Length prefixes keep parts apart: these two differ.
		{[4]string{"ab", "c", "k", "i"}, "a439a292b465a1dbeaf28b63cd0a5386"},
		{[4]string{"a", "bc", "k", "i"}, "be713775dccdc350776bd32dca9fcc91"},
	} {
		if got := ID(c.parts[0], c.parts[1], c.parts[2], c.parts[3]); got != c.want {
			t.Errorf("ID(%q) = %s, want %s", c.parts, got, c.want)
		}
	}
}

func BenchmarkID(b *testing.B) {
	for b.Loop() {
		ID("acme", "acc-12345", "milestone_reached", "onboarding/connected")
	}
}
