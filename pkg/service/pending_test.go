package service

import "testing"

func TestPendingMergesWorkByKey(t *testing.T) {
	p := NewPending()
	p.Add("t1", "first")
	p.Add("t1", "second") // merged: the later reason
	p.Add("t2", "other")
	select {
	case <-p.Wake():
	default:
		t.Fatal("no wake after Add")
	}
	got := map[string]string{}
	for {
		k, r, ok := p.Next()
		if !ok {
			break
		}
		got[k] = r
	}
	if len(got) != 2 || got["t1"] != "second" || got["t2"] != "other" {
		t.Errorf("got %v", got)
	}
}
