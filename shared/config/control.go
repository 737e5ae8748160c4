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

// Control settings are talking back (docs/architecture.md, Talking back):
// which channels accept WebSocket clients' messages for their TCP senders,
// the bounds in both directions, and presence. Both tiers read them.
type Control struct {
	ControlChannels   []string      `envconfig:"CONTROL_CHANNELS" default:"" desc:"comma-separated channel patterns (* one token, a final > the rest) on which WebSocket clients may talk back: their data frames are written to the channel's TCP senders (with RELAY_AUTH=jwt only holders of the control permission); empty = none (client data is refused with 1003 everywhere)"`
	PresenceRefresh   time.Duration `envconfig:"PRESENCE_REFRESH" default:"10s" desc:"how often ingest repeats each channel's sender count on <prefix>.ev.<channel> (arrivals and departures are announced at once), so a fanout that restarts learns the counts; a count not repeated for 3 intervals is forgotten (an ingest that died)"`
	FanoutControlRate float64       `envconfig:"FANOUT_CONTROL_RATE" roles:"all,fanout" default:"100" desc:"most control messages per second one WebSocket client may send (burst: the same number, at least 1); past it the fanout reads that client more slowly (TCP pushes back), nothing is dropped. 0 = unlimited"`
	FanoutControlMax  int           `envconfig:"FANOUT_CONTROL_MAX_MESSAGE" roles:"all,fanout" default:"65536" desc:"largest control message in bytes a WebSocket client may send; a larger one closes the client with 1009 (at most 16777215 and the NATS server's max payload)"`
	IngestControlQ    int           `envconfig:"INGEST_CONTROL_QUEUE" roles:"all,ingest" default:"256" desc:"control messages queued per TCP sender (and at most 1 MiB); a sender that does not read them has the newest dropped and counted (relay_ingest_control_messages_total{result=\"dropped\"}), never slowing other senders or its own sending"`
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
		if c.FanoutControlRate < 0 {
			add("RELAY_FANOUT_CONTROL_RATE=%g: must not be negative (0 = unlimited)", c.FanoutControlRate)
		}
		if c.FanoutControlMax < 1 || c.FanoutControlMax > MaxControlMessage {
			add("RELAY_FANOUT_CONTROL_MAX_MESSAGE=%d: must be between 1 and %d", c.FanoutControlMax, MaxControlMessage)
		}
	}
	if role == RoleAll || role == RoleIngest {
		if c.IngestControlQ < 1 || c.IngestControlQ > 1<<20 {
			add("RELAY_INGEST_CONTROL_QUEUE=%d: must be between 1 and %d", c.IngestControlQ, 1<<20)
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
