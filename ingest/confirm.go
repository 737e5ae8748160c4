package ingest

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Confirmation: a publish only hands a message to the NATS client; it can
// still die in a socket buffer if the connection drops or the server
// freezes. A flush round trip proves the server has processed everything
// published before it, so the confirmer runs one every confirmEvery while
// there is something new, and each sender connection keeps a few marks
// (its message count at a position in the connection's output) to tell how
// many of its messages NATS has confirmed. That count is the N of
// "-ERR …: N messages accepted" when ingest cannot flush at the end.
//
// The confirmations double as a stall detector: when one has been
// outstanding for stallAfter, senders are held (reading stops) although
// the connection still looks up, so a frozen server swallows at most about
// that much data before the pings (RELAY_NATS_PING_INTERVAL) declare it lost.
const (
	confirmEvery   = 100 * time.Millisecond
	confirmTimeout = time.Second
	stallAfter     = 2 * time.Second
)

// confirmer tracks which output positions of the NATS connection the
// server has confirmed. Positions count messages published (nats.go's
// OutMsgs); a generation is one underlying connection (nats.go's
// Reconnects): what was in flight when a connection dropped may be lost, so
// a generation's confirmed position is final once it ends.
type confirmer struct {
	nc *nats.Conn

	// epoch changes with every confirmation and every new generation: a
	// sender takes a mark (one lock of the NATS connection) at most once
	// per epoch, never per message.
	epoch atomic.Uint64
	// since is when the oldest unconfirmed round began (unix ns), 0 when
	// everything published is confirmed.
	since atomic.Int64

	mu        sync.Mutex
	gen       uint64
	confirmed uint64            // position confirmed in gen
	finals    map[uint64]uint64 // ended generations: their confirmed position
}

func newConfirmer(nc *nats.Conn) *confirmer {
	k := &confirmer{nc: nc, finals: map[uint64]uint64{}}
	k.gen = nc.Stats().Reconnects
	return k
}

// snapshot reads the connection's generation and output position at one
// instant, ending the previous generation if it has changed.
func (k *confirmer) snapshot() (gen, out uint64) {
	st := k.nc.Stats()
	k.mu.Lock()
	if st.Reconnects > k.gen {
		k.finals[k.gen] = k.confirmed
		delete(k.finals, k.gen-64) // marks that old are long resolved
		k.gen = st.Reconnects
		k.epoch.Add(1)
	}
	k.mu.Unlock()
	return st.Reconnects, st.OutMsgs
}

// run confirms until stop closes.
func (k *confirmer) run(stop <-chan struct{}) {
	t := time.NewTicker(confirmEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		k.round()
	}
}

func (k *confirmer) round() {
	gen, out := k.snapshot()
	k.mu.Lock()
	outstanding := gen != k.gen || out > k.confirmed
	k.mu.Unlock()
	if !outstanding {
		k.since.Store(0)
		return
	}
	k.since.CompareAndSwap(0, time.Now().UnixNano())
	if !k.nc.IsConnected() {
		return
	}
	if k.nc.FlushTimeout(confirmTimeout) == nil && k.confirm(gen, out) {
		k.since.Store(0)
	}
}

// confirm records that NATS has processed every message up to output
// position out of generation gen, after a flush round trip begun after
// snapshot returned them. A PONG that came over a newer connection (the
// PING waited in nats.go's buffer during a reconnect) confirms nothing of gen.
func (k *confirmer) confirm(gen, out uint64) bool {
	now, _ := k.snapshot()
	if now != gen {
		return false
	}
	k.mu.Lock()
	if k.gen == gen && out > k.confirmed {
		k.confirmed = out
		k.epoch.Add(1)
	}
	k.mu.Unlock()
	return true
}

// stalled reports whether a confirmation has been outstanding too long.
func (k *confirmer) stalled() bool {
	s := k.since.Load()
	return s != 0 && time.Since(time.Unix(0, s)) > stallAfter
}

// confirmedUpTo returns how many messages the marks prove confirmed: up to
// the last of the leading confirmed marks (a mark after an unconfirmed one
// proves nothing about the messages before it). It drops marks that a later
// confirmed one supersedes.
func (k *confirmer) confirmedUpTo(marks []mark) (int, []mark) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, last := 0, -1
	for i, m := range marks {
		conf, ok := k.confirmed, m.gen == k.gen
		if !ok {
			conf, ok = k.finals[m.gen]
		}
		if !ok || m.out > conf {
			break
		}
		n, last = m.msgs, i
	}
	if last > 0 {
		marks = append(marks[:0], marks[last:]...)
	}
	return n, marks
}

// anyLost reports whether a mark lies on an ended generation past what was
// confirmed on it before it dropped: those messages may have died in the
// dropped connection's buffers.
func (k *confirmer) anyLost(marks []mark) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range marks {
		if m.gen == k.gen {
			continue
		}
		if final, ok := k.finals[m.gen]; !ok || m.out > final {
			return true
		}
	}
	return false
}

// mark: a sender's first msgs messages sit at or before output position
// out of generation gen.
type mark struct {
	gen, out uint64
	msgs     int
}

// unconfirmable is the position of messages that were in flight when
// their connection dropped.
const unconfirmable = ^uint64(0)

// ledger is one sender connection's marks; only its goroutine uses it.
type ledger struct {
	k      *confirmer
	marks  []mark // at most a few: confirmed ones are dropped
	epoch  uint64 // the confirmer's epoch at the last look
	gen    uint64 // generation of the messages after the last mark
	marked int    // messages covered by marks
}

func newLedger(k *confirmer) *ledger {
	gen, _ := k.snapshot()
	return &ledger{k: k, epoch: k.epoch.Load(), gen: gen}
}

// beforePublish takes a mark when a confirmation or a new generation has
// happened since the last look. It reports false when some of the sender's
// messages went out on a NATS connection that dropped before confirming
// them: they may be lost, and the sender must be told instead of carrying on
// past a gap its watchers cannot see.
func (l *ledger) beforePublish(msgs int) bool {
	// A reconnect can complete between two publishes without either failing
	// (a killed server is noticed and replaced within milliseconds), so the
	// generation is read before every publish (one uncontended lock of the
	// NATS connection), not only when the confirmer's epoch has moved.
	if l.k.nc.Stats().Reconnects != l.gen {
		l.epoch = l.k.epoch.Load()
		return !l.lost(msgs)
	}
	if e := l.k.epoch.Load(); e != l.epoch {
		l.epoch = e
		return !l.lost(msgs)
	}
	return true
}

// lost reports whether some of the sender's first msgs messages were
// published on a connection that has dropped since, past what NATS
// confirmed on it.
func (l *ledger) lost(msgs int) bool {
	l.take(msgs)
	return l.k.anyLost(l.marks)
}

// take marks the messages published so far and returns the mark's
// generation and position.
func (l *ledger) take(msgs int) (gen, out uint64) {
	gen, out = l.k.snapshot()
	if msgs > l.marked {
		m := mark{gen: gen, out: out, msgs: msgs}
		if gen != l.gen {
			// Some were published on a connection that has dropped since:
			// they may have died with it.
			m = mark{gen: l.gen, out: unconfirmable, msgs: msgs}
		}
		l.marks = append(l.marks, m)
		l.marked = msgs
	}
	l.gen = gen
	return gen, out
}

// confirmed returns how many of the sender's first msgs messages NATS has
// confirmed.
func (l *ledger) confirmed(msgs int) int {
	l.take(msgs)
	n, marks := l.k.confirmedUpTo(l.marks)
	l.marks = marks
	return n
}

// flush confirms the sender's messages with a round trip of its own (at
// shutdown) and returns how many are confirmed.
func (l *ledger) flush(msgs int, timeout time.Duration) int {
	gen, out := l.take(msgs)
	if l.k.nc.IsConnected() && l.k.nc.FlushTimeout(timeout) == nil {
		l.k.confirm(gen, out)
	}
	return l.confirmed(msgs)
}
