package netguard

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits are the per-client-address limits of one edge.
type Limits struct {
	// MaxConns is the most connections one address may hold open; 0 means
	// no cap per address.
	MaxConns int
	// Rate admits N new connections per Per from one address (a token
	// bucket holding at most N); N == 0 means no rate limit.
	Rate Rate
	// MaxTracked bounds how many idle addresses (no open connection) keep
	// their rate state. Past it the oldest-looking idle entries are
	// forgotten, which only ever makes the limiter more lenient. Defaults
	// to 65536. Addresses with open connections are always kept: their
	// number is bounded by the tier's connection cap.
	MaxTracked int
}

// Rate is N events per Per, as written N/DURATION (e.g. 10/1m).
type Rate struct {
	N   int
	Per time.Duration
}

// Limiter enforces Limits per client address. IPv4 addresses count one by
// one; IPv6 addresses count per /64, since anyone holding one address of a
// /64 usually holds all of it.
type Limiter struct {
	lim       Limits
	every     rate.Limit
	mu        sync.Mutex
	addrs     map[netip.Prefix]*addrState
	nextSweep time.Time
}

type addrState struct {
	conns  int
	bucket *rate.Limiter // nil without a rate
}

// NewLimiter returns a Limiter; with no cap and no rate it admits everything
// without keeping state.
func NewLimiter(l Limits) *Limiter {
	if l.MaxTracked <= 0 {
		l.MaxTracked = 65536
	}
	lm := &Limiter{lim: l, addrs: map[netip.Prefix]*addrState{}}
	if l.Rate.N > 0 && l.Rate.Per > 0 {
		lm.every = rate.Limit(float64(l.Rate.N) / l.Rate.Per.Seconds())
	}
	return lm
}

// Key is the unit a client address counts against: the address itself for
// IPv4, its /64 for IPv6.
func Key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// Acquire admits a new connection from a, or says why not (ErrRateLimited,
// ErrTooManyFromAddr). The caller calls release exactly once when the
// connection closes; release is safe to call twice. An invalid address (a
// pipe, a Unix socket) is always admitted.
func (l *Limiter) Acquire(a netip.Addr) (release func(), err error) {
	if l == nil || (l.lim.MaxConns <= 0 && l.every == 0) || !a.IsValid() {
		return func() {}, nil
	}
	k := Key(a)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.addrs[k]
	if st == nil {
		if len(l.addrs) >= l.lim.MaxTracked || now.After(l.nextSweep) {
			l.sweepLocked(now)
		}
		st = &addrState{}
		if l.every > 0 {
			st.bucket = rate.NewLimiter(l.every, l.lim.Rate.N)
		}
		l.addrs[k] = st
	}
	if st.bucket != nil && !st.bucket.AllowN(now, 1) {
		return nil, ErrRateLimited
	}
	if l.lim.MaxConns > 0 && st.conns >= l.lim.MaxConns {
		return nil, ErrTooManyFromAddr
	}
	st.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			st.conns--
			l.mu.Unlock()
		})
	}, nil
}

// sweepLocked forgets idle addresses whose bucket is full again (they would
// start afresh anyway); if that is not enough, idle addresses regardless.
// Sweeps run at most once a second unless the table is full, so the cost is
// amortised even when most entries hold connections.
func (l *Limiter) sweepLocked(now time.Time) {
	l.nextSweep = now.Add(time.Second)
	for k, st := range l.addrs {
		if st.conns == 0 && (st.bucket == nil || st.bucket.TokensAt(now) >= float64(l.lim.Rate.N)) {
			delete(l.addrs, k)
		}
	}
	if len(l.addrs) < l.lim.MaxTracked {
		return
	}
	target := l.lim.MaxTracked * 3 / 4
	for k, st := range l.addrs { // map order is random: no address is singled out
		if len(l.addrs) <= target {
			break
		}
		if st.conns == 0 {
			delete(l.addrs, k)
		}
	}
}

// Conns returns how many connections a's key holds open (tests, debugging).
func (l *Limiter) Conns(a netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.addrs[Key(a)]; st != nil {
		return st.conns
	}
	return 0
}

// Tracked returns how many address keys the limiter holds state for.
func (l *Limiter) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}
