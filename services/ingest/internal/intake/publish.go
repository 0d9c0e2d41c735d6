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
// JetStream write waits for its own fsync, so single-event requests each
// paid one; coalesced, they share it, at the cost of a wait of at most
// wait for the first request of a group. The guarantee is unchanged: a 200
// still means the events are durably in the stream. (A coalesced message's
// dedup id covers the whole group, so JetStream drops only a retry of the
// same group; the writer's dedup stores each messageId once anyway.)
type coalescer struct {
	js      jetstream.JetStream
	wait    time.Duration
	timeout time.Duration

	mu   sync.Mutex
	open map[string]*group // by tenant
}

// Requests with at least alone events are published on their own: they
// fill a message already.
const alone = 50

// groupEvents closes a group at this many events.
const groupEvents = 500

type group struct {
	tenant string
	evs    []events.Event
	once   sync.Once
	done   chan struct{}
	err    error
}

func newCoalescer(js jetstream.JetStream, wait, timeout time.Duration) *coalescer {
	return &coalescer{js: js, wait: wait, timeout: timeout, open: map[string]*group{}}
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
	g := c.open[tenant]
	if g == nil {
		g = &group{tenant: tenant, done: make(chan struct{})}
		c.open[tenant] = g
		time.AfterFunc(c.wait, func() { c.flush(g) })
	}
	g.evs = append(g.evs, evs...)
	full := len(g.evs) >= groupEvents
	if full {
		delete(c.open, tenant)
	}
	c.mu.Unlock()
	if full {
		go c.flush(g)
	}
	// Wait for the group even if the client left: its events (which alias
	// the request's body) are in the group until it is published. The wait
	// is bounded by the publish timeout.
	<-g.done
	return g.err
}

// flush publishes a group once, on behalf of all its requests.
func (c *coalescer) flush(g *group) {
	g.once.Do(func() {
		c.mu.Lock()
		if c.open[g.tenant] == g {
			delete(c.open, g.tenant)
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		g.err = publish(ctx, c.js, g.tenant, g.evs)
		close(g.done)
	})
}
