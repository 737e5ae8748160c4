package wsframe

import (
	"sync"
	"time"
)

// pingSlots is how many slots the Pinger's wheel has: each connection is
// pinged when its slot comes round, once per interval, so the pings of many
// connections are spread over the interval rather than sent together.
const pingSlots = 16

// Pinger pings the connections added to it, each once per interval, and
// marks one that has not answered within timeout; its ReadLoop then returns
// ErrPingTimeout. It is one goroutine and one ticker for all of them (a
// timer wheel), running only while it holds a connection, instead of a
// timer per connection. Each ping is written by a goroutine of its own,
// which ends with the write: a client whose socket is full holds up only
// its own ping, and the connection's reader keeps its small stack. A late
// pong wakes the reader through its read deadline.
type Pinger struct {
	interval, timeout, tick time.Duration

	mu     sync.Mutex
	slots  [pingSlots][]*Conn
	checks [pingSlots][]pingCheck // pongs due when the slot comes round
	pos    int                    // the slot the next tick handles
	n      int                    // connections held
	quit   chan struct{}          // non-nil while the goroutine runs
}

// pingCheck: c's ping sent at at (unix ns) is to be answered by now.
type pingCheck struct {
	c  *Conn
	at int64
}

// NewPinger returns a Pinger, or nil (which pings nothing) when interval is
// not positive.
func NewPinger(interval, timeout time.Duration) *Pinger {
	if interval <= 0 {
		return nil
	}
	return &Pinger{interval: interval, timeout: timeout, tick: max(interval/pingSlots, time.Millisecond)}
}

// Add starts pinging c; the first ping goes out about one interval later.
func (p *Pinger) Add(c *Conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.wheel != nil {
		return
	}
	// The slot handled last comes round again in one interval.
	s := (p.pos + pingSlots - 1) % pingSlots
	c.wheel, c.slot, c.idx = p, int32(s), int32(len(p.slots[s]))
	p.slots[s] = append(p.slots[s], c)
	p.n++
	if p.quit == nil {
		p.quit = make(chan struct{})
		go p.run(p.quit)
	}
}

// Remove stops pinging c; its reader is not woken again once Remove
// returns. The goroutine ends with the last connection.
func (p *Pinger) Remove(c *Conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.wheel != p {
		return
	}
	slot := p.slots[c.slot]
	last := len(slot) - 1
	slot[c.idx] = slot[last]
	slot[c.idx].idx = c.idx
	slot[last] = nil
	p.slots[c.slot] = slot[:last]
	c.wheel = nil
	p.n--
	if p.n == 0 && p.quit != nil {
		close(p.quit)
		p.quit = nil
	}
}

func (p *Pinger) run(quit chan struct{}) {
	t := time.NewTicker(p.tick)
	defer t.Stop()
	for {
		select {
		case <-quit:
			return
		case now := <-t.C:
			p.turn(now.UnixNano())
		}
	}
}

// turn handles one slot: the pongs due by now, then a ping to each of the
// slot's connections that has none outstanding.
func (p *Pinger) turn(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.pos
	p.pos = (p.pos + 1) % pingSlots
	checks := p.checks[s]
	p.checks[s] = nil
	for _, ck := range checks {
		c := ck.c
		if c.wheel != p || c.pingAt.Load() != ck.at {
			continue // gone, or answered
		}
		if now-ck.at >= int64(p.timeout) {
			c.pingLate.Store(true)
			c.wake()
			continue
		}
		p.schedule(ck, s, now)
	}
	for _, c := range p.slots[s] {
		if c.pingAt.Load() != 0 || c.pingLate.Load() {
			continue // the last one is still outstanding: not doubled
		}
		c.pingAt.Store(now)
		go c.sendPing()
		p.schedule(pingCheck{c, now}, s, now)
	}
}

// schedule puts ck in the slot that comes round when its pong is due (at
// most one revolution on; a check not yet due there is put off again).
func (p *Pinger) schedule(ck pingCheck, s int, now int64) {
	left := ck.at + int64(p.timeout) - now
	k := int((left + int64(p.tick) - 1) / int64(p.tick))
	k = min(max(k, 1), pingSlots)
	i := (s + k) % pingSlots
	p.checks[i] = append(p.checks[i], ck)
}
