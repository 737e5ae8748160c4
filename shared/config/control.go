package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/relaydev/relay/shared/auth"
)

// MaxControlMessage is the largest RELAY_FANOUT_CONTROL_MAX_MESSAGE: a len32
// control frame's first byte is then always 0, which tells it apart from
// ingest's reply lines (+OK, +ACK, -ERR) on the same connection.
const MaxControlMessage = 1<<24 - 1

// Control is the talking-back settings (docs/architecture.md, Talking
// back) as the tiers take them, gathered from Common, Ingest and Fanout by
// Config.Control: which channels accept WebSocket clients' messages for
// their TCP senders, the bounds in both directions, and presence.
type Control struct {
	ControlChannels   []string
	PresenceRefresh   time.Duration
	FanoutControlRate float64
	FanoutControlMax  int
	IngestControlQ    int
	IngestControlB    int // bytes
}

// Control gathers the talking-back settings.
func (c Config) Control() Control {
	return Control{
		ControlChannels:   c.ControlChannels,
		PresenceRefresh:   c.PresenceRefresh,
		FanoutControlRate: c.FanoutControlRate,
		FanoutControlMax:  c.FanoutControlMax,
		IngestControlQ:    c.IngestControlQueue,
		IngestControlB:    c.IngestControlBytes,
	}
}

// Validate checks the talking-back settings and returns every problem joined.
func (c Control) Validate(role Role) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, p := range c.ControlChannels {
		if err := auth.ValidatePattern(strings.TrimSpace(p)); err != nil {
			add("RELAY_CONTROL_CHANNELS: %v", err)
		}
	}
	if c.PresenceRefresh < 100*time.Millisecond || c.PresenceRefresh > time.Hour {
		add("RELAY_PRESENCE_REFRESH=%s: must be between 100ms and 1h", c.PresenceRefresh)
	}
	if role == RoleAll || role == RoleFanout {
		// Below 1/s a client would wait longer than a ping's timeout between
		// frames (its reader is what reads the pong).
		if c.FanoutControlRate != 0 && (c.FanoutControlRate < 1 || c.FanoutControlRate > 1e6) {
			add("RELAY_FANOUT_CONTROL_RATE=%g: must be 0 (unlimited) or between 1 and 1000000 messages/s", c.FanoutControlRate)
		}
		if c.FanoutControlMax < 1 || c.FanoutControlMax > MaxControlMessage {
			add("RELAY_FANOUT_CONTROL_MAX_MESSAGE=%d: must be between 1 and %d", c.FanoutControlMax, MaxControlMessage)
		}
	}
	if role == RoleAll || role == RoleIngest {
		if c.IngestControlQ < 1 || c.IngestControlQ > 1<<20 {
			add("RELAY_INGEST_CONTROL_QUEUE=%d: must be between 1 and %d", c.IngestControlQ, 1<<20)
		}
		if c.IngestControlB < 1<<10 || c.IngestControlB > 256<<20 {
			add("RELAY_INGEST_CONTROL_QUEUE_BYTES=%d: must be between 1024 (1 KiB) and %d (256 MiB)", c.IngestControlB, 256<<20)
		}
	}
	return errors.Join(errs...)
}

// Patterns returns the control channel patterns, trimmed.
func (c Control) Patterns() []string {
	out := make([]string, 0, len(c.ControlChannels))
	for _, p := range c.ControlChannels {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
