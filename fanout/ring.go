package fanout

import (
	"sort"
	"time"
)

// ring is a durable channel's most recent messages, in stream order, as
// this fanout received them from the channel's ordered consumer
// (RELAY_DURABLE_RING of them). It lets a client that resumes, or that fell
// behind, get what it missed from memory: after a pod restart thousands of
// watchers come back with ?since= within the last few messages, and none of
// them should cost a JetStream request.
//
// floor is what makes the ring usable for a resume point: every message of
// the channel with a stream sequence above floor is in the ring (or still
// to come from the consumer). It starts as the stream's last sequence when
// the channel's consumer was created, and becomes the sequence of each
// message the ring evicts. The ring is guarded by its channel's ringMu.
type ring struct {
	buf   []*message // circular; len(buf) is the capacity
	start int        // index of the oldest
	n     int
	floor uint64
}

func newRing(size int, floor uint64) *ring {
	return &ring{buf: make([]*message, size), floor: floor}
}

// at is the i-th oldest message (0 <= i < n).
func (r *ring) at(i int) *message { return r.buf[(r.start+i)%len(r.buf)] }

// last is the newest message's sequence, or floor when the ring is empty.
func (r *ring) last() uint64 {
	if r.n == 0 {
		return r.floor
	}
	return r.at(r.n - 1).seq
}

// push appends msg, evicting the oldest when full. It refuses a message
// not after the newest (a consumer must never repeat one; this keeps a
// client from ever getting a duplicate if it did).
func (r *ring) push(msg *message) bool {
	if msg.seq <= r.last() {
		return false
	}
	if len(r.buf) == 0 {
		r.floor = msg.seq
		return true
	}
	if r.n == len(r.buf) {
		r.floor = r.buf[r.start].seq
		r.buf[r.start] = nil
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
	r.buf[(r.start+r.n)%len(r.buf)] = msg
	r.n++
	return true
}

// covers reports whether the ring holds every message after pos.
func (r *ring) covers(pos uint64) bool { return pos >= r.floor }

// after is the index of the first message with a sequence above pos
// (n when there is none); pos must be covered.
func (r *ring) after(pos uint64) int {
	return sort.Search(r.n, func(i int) bool { return r.at(i).seq > pos })
}

// lastN is the position after which the last n messages of the channel
// follow, when the ring holds them all.
func (r *ring) lastN(n int) (pos uint64, ok bool) {
	switch {
	case n == 0:
		return r.last(), true
	case n > r.n:
		return 0, false
	case n == r.n:
		return r.floor, true
	default:
		return r.at(r.n - n - 1).seq, true
	}
}

// before is the position after which the messages stored at or after t
// follow, when the ring can tell: it holds a message older than t, and the
// channel's messages are stored in time order (the stream's timestamps).
func (r *ring) before(t time.Time) (pos uint64, ok bool) {
	i := sort.Search(r.n, func(i int) bool { return !r.at(i).time.Before(t) })
	if i == 0 {
		return 0, false
	}
	return r.at(i - 1).seq, true
}
