package intake

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stickpoint/stickpoint/pkg/events"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
)

// maxMessageBytes keeps each message under the default NATS max_payload
// (1 MB) of an external server, with room for headers.
const maxMessageBytes = 900 << 10

// publish writes a request's events to the EVENTS stream: one message per
// event type (split further to stay under maxMessageBytes), each with a
// dedup id derived from the tenant and its messageIds. It returns only when
// JetStream has acknowledged every message, so a nil error means every
// event is durably in the stream.
//
// One message per request rather than per event: on this hardware
// JetStream takes about 59k msgs/s with dedup ids but about 1.1M events/s
// when 100 events share a message (DESIGN.md), and the 100k events/s target
// needs the second.
func publish(ctx context.Context, js jetstream.JetStream, tenant string, evs []events.Event) error {
	byType := map[string][]events.Event{}
	if sameType(evs) {
		byType[evs[0].Type] = evs // the common case: no copy
	} else {
		for _, e := range evs {
			byType[e.Type] = append(byType[e.Type], e)
		}
	}
	for _, typ := range publishOrder {
		group := byType[typ]
		for len(group) > 0 {
			body, n, err := encodeUpTo(group, maxMessageBytes)
			if err != nil {
				return err
			}
			chunk := group[:n]
			group = group[n:]
			msg := &nats.Msg{Subject: natsjs.EventSubject(tenant, typ), Data: body, Header: nats.Header{}}
			natsjs.InjectTrace(ctx, msg.Header)
			if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(events.DedupID(tenant, typ, chunk)),
				jetstream.WithExpectStream(natsjs.EventsStream)); err != nil {
				return fmt.Errorf("publish %d %s events: %w", len(chunk), typ, err)
			}
		}
	}
	return nil
}

func sameType(evs []events.Event) bool {
	for i := range evs {
		if evs[i].Type != evs[0].Type {
			return false
		}
	}
	return len(evs) > 0
}

// publishOrder puts the calls that say who a user is and which account they
// belong to before the calls that account resolution reads, so the writer,
// which consumes in stream order, sees a request's group call before its
// tracks.
var publishOrder = []string{events.TypeGroup, events.TypeIdentify, events.TypeAlias,
	events.TypeTrack, events.TypePage, events.TypeScreen}

// encodeUpTo encodes as many leading events as fit in limit bytes (at least one).
func encodeUpTo(evs []events.Event, limit int) ([]byte, int, error) {
	body, err := events.Encode(evs)
	if err != nil {
		return nil, 0, err
	}
	if len(body) <= limit || len(evs) == 1 {
		return body, len(evs), nil
	}
	return encodeUpTo(evs[:len(evs)/2], limit)
}

// coalescer merges the events of concurrent small requests of one tenant
// into one JetStream message, and answers each request only once that
// message is acknowledged: group commit. With nats.sync_always every
// JetStream write waits for its own fsync, one after another (about 1,500
// a second here), so single-event requests each paid one; coalesced, they
// share it. A tenant has at most inflight coalesced writes in flight:
// requests that arrive meanwhile gather into the next, which goes as soon
// as a write before it is acknowledged, so groups grow with the load. A
// request that finds room waits at most wait for company. The
// guarantee is unchanged: a 200 still means the events are durably in the
// stream. (A coalesced message's dedup id covers the whole group, so
// JetStream drops only a retry of the same group; the writer's dedup
// stores each messageId once anyway.)
type coalescer struct {
	js       jetstream.JetStream
	wait     time.Duration
	timeout  time.Duration
	inflight int // see DefaultInflight

	mu      sync.Mutex
	tenants map[string]*pipeline
}

// pipeline is a tenant's coalesced writes: those in flight, and the group
// gathering behind them.
type pipeline struct {
	inflight int
	next     *group
}

// DefaultInflight is how many coalesced writes of a tenant may be in
// flight at once, by how JetStream stores them. Measured on two cores with
// single-event requests from 64 clients, and 100-event requests from 16:
//   - When JetStream fsyncs every write (nats.sync_always), one: each
//     write then takes milliseconds, and with one in flight the requests
//     behind it gather into groups twice as large, so half the fsyncs
//     (at about 500 a second, fsync took 6-7% of the CPU here):
//     10,600-14,100 single events/s against 8,100-11,700 with two, in
//     paired runs.
//   - Otherwise two: a write is a fraction of a millisecond, and a second
//     one keeps JetStream busy while the first's acknowledgement makes its
//     way back: 17,200 single events/s and 153,000-177,000 in 100-event
//     requests, against 14,600-15,700 and 116,000-149,000 with one.
//
// JetStream stores a stream's writes one after another anyway, so requests
// still gather behind those in flight.
func DefaultInflight(fsyncEveryWrite bool) int {
	if fsyncEveryWrite {
		return 1
	}
	return 2
}

// Requests with at least alone events are published on their own: they
// fill a message already. Smaller ones, 100-event batches included, share:
// measured with nats.sync_always, 16 clients of 100-event requests went
// from 61k to 110k events/s accepted when they did.
const alone = 500

// groupEvents sends a group at once, before its wait is over. (Behind a
// write in flight, a group grows until that write is done; its message is
// split under the NATS payload limit like any other.)
const groupEvents = 2000

type group struct {
	evs  []events.Event
	done chan struct{}
	err  error
}

func newCoalescer(js jetstream.JetStream, wait, timeout time.Duration, inflight int) *coalescer {
	return &coalescer{js: js, wait: wait, timeout: timeout, inflight: inflight, tenants: map[string]*pipeline{}}
}

// publish returns once evs are durably in the stream, or with the error
// that kept them out.
func (c *coalescer) publish(ctx context.Context, tenant string, evs []events.Event) error {
	if c.wait <= 0 || len(evs) >= alone {
		pctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		return publish(pctx, c.js, tenant, evs)
	}
	c.mu.Lock()
	p := c.tenants[tenant]
	if p == nil {
		p = &pipeline{}
		c.tenants[tenant] = p
	}
	g := p.next
	if g == nil {
		g = &group{done: make(chan struct{})}
		p.next = g
		if p.inflight < c.inflight {
			// Room for a write: wait a moment for company, then go.
			time.AfterFunc(c.wait, func() { c.start(tenant, p, g) })
		}
	}
	g.evs = append(g.evs, evs...)
	if p.inflight < c.inflight && len(g.evs) >= groupEvents {
		p.inflight++ // full: it goes now
		p.next = nil
		go c.run(tenant, p, g)
	}
	c.mu.Unlock()
	// Wait for the group even if the client left: its events (which alias
	// the request's body) are in the group until it is published. The wait
	// is bounded by the publish timeout.
	<-g.done
	return g.err
}

// start sends g if it is still the next group and there is room.
func (c *coalescer) start(tenant string, p *pipeline, g *group) {
	c.mu.Lock()
	if p.inflight >= c.inflight || p.next != g {
		c.mu.Unlock()
		return // a write in flight takes it when it is done
	}
	p.inflight++
	p.next = nil
	c.mu.Unlock()
	c.run(tenant, p, g)
}

// run writes g, then whatever gathered meanwhile, until nothing is left.
func (c *coalescer) run(tenant string, p *pipeline, g *group) {
	for g != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		g.err = publish(ctx, c.js, tenant, g.evs)
		cancel()
		close(g.done)
		c.mu.Lock()
		g, p.next = p.next, nil
		if g == nil {
			p.inflight--
			if p.inflight == 0 && len(c.tenants) > maxIdlePipelines {
				delete(c.tenants, tenant)
			}
		}
		c.mu.Unlock()
	}
}

// maxIdlePipelines bounds the tenants whose idle pipeline is kept.
const maxIdlePipelines = 10_000
