package loadgen

import (
	"errors"
	"time"
)

// stampLen is the length of the send timestamp at the start of every
// message: 16 lower-case hex digits of nanoseconds since the run's clock
// started. Hex keeps the message a valid text line for line framing.
const stampLen = 16

// MinSize is the smallest message size: the timestamp alone.
const MinSize = stampLen

var errShort = errors.New("loadgen: message shorter than its timestamp")

// clock is the run's monotonic clock: senders and receivers are in one
// process, so a time.Time with its monotonic reading is a shared reference.
type clock struct{ base time.Time }

func newClock() clock { return clock{base: time.Now()} }

// now returns nanoseconds since the clock started (monotonic).
func (c clock) now() int64 { return int64(time.Since(c.base)) }

// newPayload returns a message of size bytes: room for the timestamp, then
// filler that is valid UTF-8 and contains no '\n'.
func newPayload(size int) []byte {
	p := make([]byte, size)
	const fill = "relay-bench-"
	for i := stampLen; i < size; i++ {
		p[i] = fill[(i-stampLen)%len(fill)]
	}
	return p
}

const hexDigits = "0123456789abcdef"

// stamp writes t into the first stampLen bytes of p.
func stamp(p []byte, t int64) {
	_ = p[stampLen-1]
	u := uint64(t)
	for i := stampLen - 1; i >= 0; i-- {
		p[i] = hexDigits[u&0xf]
		u >>= 4
	}
}

// readStamp parses the timestamp at the start of p.
func readStamp(p []byte) (int64, error) {
	if len(p) < stampLen {
		return 0, errShort
	}
	var u uint64
	for _, c := range p[:stampLen] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, errShort
		}
		u = u<<4 | uint64(d)
	}
	return int64(u), nil
}
