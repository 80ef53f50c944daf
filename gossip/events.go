package gossip

import (
	"strconv"
	"sync"
	"time"
)

// EventType says what happened to a member.
type EventType int

const (
	EventJoin   EventType = iota // a member appeared, or came back after dead/left
	EventUpdate                  // a member's Meta changed
	EventLeave                   // a member left gracefully
	EventFail                    // a member was declared dead by failure detection
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change of membership.
type Event struct {
	Type   EventType
	Member Member
	At     time.Time
}

// DefaultSubscribeBuffer is the buffer Subscribe uses when given buf <= 0:
// enough for every member of a large cluster to join at once.
const DefaultSubscribeBuffer = 1024

type subscriber struct {
	id      uint64 // names the subscriber in rate-limited warnings
	ch      chan Event
	dropped uint64 // guarded by Pool.mu
}

// Subscribe returns a channel of membership events, delivered in the order
// this node saw them, and a cancel func that closes the channel (safe to call
// more than once). Shutdown closes every channel.
//
// Events are sent from memberlist's own goroutines, which must never block,
// so when the channel's buffer (buf, or DefaultSubscribeBuffer when buf <= 0)
// is full the event is dropped, counted in Stats().DroppedEvents, and a
// warning is logged at most every 10s per subscriber. Size buf for the
// largest burst you may lag behind (about the cluster size), and treat events
// as hints: reconcile against Members(), which is always complete.
func (p *Pool) Subscribe(buf int) (events <-chan Event, cancel func()) {
	if buf <= 0 {
		buf = DefaultSubscribeBuffer
	}
	s := &subscriber{ch: make(chan Event, buf)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextSubID++
	s.id = p.nextSubID
	if p.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	p.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			if _, ok := p.subs[s]; ok {
				delete(p.subs, s)
				close(s.ch)
			}
		})
	}
}

// publishLocked fans ev out without blocking. Callers hold p.mu, and
// memberlist serializes its callbacks, so every subscriber sees events in
// the same order.
func (p *Pool) publishLocked(ev Event) {
	for s := range p.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped++
			p.dropped.Add(1)
			if p.limiter.allow("drop:" + strconv.FormatUint(s.id, 10)) {
				p.log.Warn("gossip subscriber too slow, dropping events",
					"node", ev.Member.Meta.Name, "event", ev.Type.String(),
					"dropped", s.dropped, "buffer", cap(s.ch))
			}
		}
	}
}
