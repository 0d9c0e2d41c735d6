// Package dedup holds the writer's in-memory view of which messageIds are
// stored: a compact set of their hashes. It is pure and not safe for
// concurrent use; the writer guards it.
package dedup

import (
	"github.com/go-faster/city"
)

// Hash is the 64-bit hash of a tenant's messageId: ClickHouse's cityHash64
// of the tenant, a NUL and the messageId, which the message_ids view
// computes alike. Tenant ids never hold a NUL byte, so the separator keeps
// ("a", "bc") and ("ab", "c") apart. It is stored, so it must never change.
func Hash(tenant, messageID string) uint64 {
	buf := make([]byte, 0, len(tenant)+1+len(messageID))
	buf = append(append(append(buf, tenant...), 0), messageID...)
	return city.CH64(buf)
}

// Filter is a set of messageId hashes, each stamped with the hour it was
// added, so entries past the dedup horizon can be dropped. It answers "may
// have been stored" (Has): a hit is checked against ClickHouse, so the 48
// bits kept of each hash only have to make false hits rare (one in about
// 10^7 lookups with 30 million entries), never impossible. A miss is
// certain, which is what spares the check for almost every new event.
//
// Each entry is one uint64 in an open-addressing table kept at most 3/4
// full: 11 to 21 bytes per messageId.
type Filter struct {
	slots []uint64 // fingerprint<<16 | hour; 0 is an empty slot
	n     int
}

const minSlots = 1024

// NewFilter returns an empty filter.
func NewFilter() *Filter { return &Filter{slots: make([]uint64, minSlots)} }

func entry(h uint64, hour uint32) uint64 {
	fp := h >> 16
	if fp == 0 {
		fp = 1
	}
	return fp<<16 | uint64(hour&0xffff)
}

// Add records h as added in hour (hours since the Unix epoch).
func (f *Filter) Add(h uint64, hour uint32) {
	if (f.n+1)*4 > len(f.slots)*3 {
		f.resize(len(f.slots) * 2)
	}
	f.insert(entry(h, hour))
}

func (f *Filter) insert(e uint64) {
	mask := uint64(len(f.slots) - 1)
	for i := e >> 16 & mask; ; i = (i + 1) & mask {
		switch s := f.slots[i]; {
		case s == 0:
			f.slots[i] = e
			f.n++
			return
		case s>>16 == e>>16:
			if hourAfter(uint32(e&0xffff), uint32(s&0xffff)) {
				f.slots[i] = e // keep the latest hour
			}
			return
		}
	}
}

// Has reports whether h may have been added.
func (f *Filter) Has(h uint64) bool {
	fp := entry(h, 0) >> 16
	mask := uint64(len(f.slots) - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		s := f.slots[i]
		if s == 0 {
			return false
		}
		if s>>16 == fp {
			return true
		}
	}
}

// Expire drops the entries added before hour oldest.
func (f *Filter) Expire(oldest uint32) {
	old := f.slots
	f.slots, f.n = make([]uint64, len(old)), 0
	for _, s := range old {
		if s != 0 && !hourAfter(oldest, uint32(s&0xffff)) {
			f.insert(s)
		}
	}
	for len(f.slots) > minSlots && f.n*4 < len(f.slots) {
		f.resize(len(f.slots) / 2)
	}
}

// hourAfter compares 16-bit hour stamps, which wrap every 7.5 years: the
// entries compared are never more than the horizon apart.
func hourAfter(a, b uint32) bool { return int16(uint16(a)-uint16(b)) > 0 }

func (f *Filter) resize(size int) {
	old := f.slots
	f.slots, f.n = make([]uint64, size), 0
	for _, s := range old {
		if s != 0 {
			f.insert(s)
		}
	}
}

// Len is the number of entries.
func (f *Filter) Len() int { return f.n }

// Bytes is the memory the table takes.
func (f *Filter) Bytes() int { return len(f.slots) * 8 }
