// Package tierkit is what the ingest and fanout tiers do the same way: fill
// in and check the options both constructors take, rate-limit the log lines
// that peers can cause, and answer readiness from the NATS connection. One
// home, so the tiers cannot drift apart again.
package tierkit

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/subjects"
)

// DefaultShutdownGrace is used when a tier is given no grace; it is
// RELAY_SHUTDOWN_GRACE's default.
const DefaultShutdownGrace = 20 * time.Second

// ErrNATSDisconnected is what a tier's readiness reports while its NATS
// connection is down.
var ErrNATSDisconnected = errors.New("NATS not connected")

// Defaults fills in the options both tiers may leave out: the logger
// (slog.Default(), tagged with the tier) and the shutdown grace.
func Defaults(tier string, log **slog.Logger, grace *time.Duration) {
	if *log == nil {
		*log = slog.Default().With("tier", tier)
	}
	if *grace <= 0 {
		*grace = DefaultShutdownGrace
	}
}

// Check returns every problem with the options both tiers require.
func Check(nc *nats.Conn, subjectPrefix string) []error {
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("NATS connection is nil"))
	}
	if err := subjects.ValidatePrefix(subjectPrefix); err != nil {
		errs = append(errs, fmt.Errorf("subject prefix %q: %w", subjectPrefix, err))
	}
	return errs
}

// NATSReady is a readiness check (for health.New): nil while nc is
// connected, else ErrNATSDisconnected.
func NATSReady(nc interface{ IsConnected() bool }) func() error {
	return func() error {
		if !nc.IsConnected() {
			return ErrNATSDisconnected
		}
		return nil
	}
}

// LogLimiter lets one log line per key through per interval and counts the
// ones it held back, so a misbehaving peer or fleet cannot flood the log
// while the line that does get out says how many it stands for. Keys are
// meant to be few and fixed (typed reasons), which bounds its memory.
type LogLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	next     map[string]time.Time
	held     map[string]int
}

// NewLogLimiter returns a LogLimiter letting one line per key through per interval.
func NewLogLimiter(interval time.Duration) *LogLimiter {
	return &LogLimiter{interval: interval, next: map[string]time.Time{}, held: map[string]int{}}
}

// Allow reports whether to log a line for key now, and how many were held
// back since the last one.
func (l *LogLimiter) Allow(key string) (held int, ok bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next[key]) {
		l.held[key]++
		return 0, false
	}
	l.next[key] = now.Add(l.interval)
	held = l.held[key]
	delete(l.held, key)
	return held, true
}
