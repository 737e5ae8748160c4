package fanout

import (
	"fmt"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/wsframe"
)

// Talking back (docs/architecture.md): on channels matching
// RELAY_CONTROL_CHANNELS a client's data frames (text or binary) are
// published to <prefix>.ctl.<channel>, where ingest writes them to the
// channel's TCP senders. Elsewhere client data is still refused with 1003.

// Close codes and reasons of talking back.
const (
	reasonControlForbidden = "forbidden: no control permission for this channel"
	reasonControlFailed    = "control message not delivered; retry later"
	disconnectTooLarge     = metrics.DisconnectControlTooLarge
	disconnectCtlForbidden = metrics.DisconnectControlForbidden
	disconnectCtlFailed    = metrics.DisconnectControlFailed
)

// controlConfig is the server's talking-back settings.
type controlConfig struct {
	patterns []string // RELAY_CONTROL_CHANNELS
	rate     float64  // RELAY_FANOUT_CONTROL_RATE per client; 0: unlimited
	max      int      // RELAY_FANOUT_CONTROL_MAX_MESSAGE
}

// enabled reports whether clients of channel may talk back.
func (cc controlConfig) enabled(channel string) bool { return auth.MatchAny(cc.patterns, channel) }

// talk is one client's talking back: where its frames go, whether it may
// send them, and its rate.
type talk struct {
	nc        *nats.Conn
	m         *metrics.Fanout
	subject   string
	max       int
	permitted bool          // auth off, or the token has control on the channel
	limiter   *rate.Limiter // nil: unlimited
}

// newTalk returns the talking-back state of a client of channel, or nil
// when the channel is not a control channel (its data is refused).
func (s *Server) newTalk(channel string, id auth.Identity) *talk {
	if subjects.IsPattern(channel) || !s.ctl.enabled(channel) {
		return nil // a wildcard watcher talks to no one: which channel's senders?
	}
	t := &talk{
		nc:        s.nc,
		m:         s.m,
		subject:   s.mapper.ControlSubject(channel),
		max:       s.ctl.max,
		permitted: !s.auth.Enabled() || id.Permissions.Allows(auth.ActionControl, channel),
	}
	if s.ctl.rate > 0 {
		t.limiter = rate.NewLimiter(rate.Limit(s.ctl.rate), max(1, int(s.ctl.rate)))
	}
	return t
}

// readLimit is the largest message the reader takes; past it the reader
// stops and tooLarge closes the client.
func (t *talk) readLimit() int { return t.max }

// tooLarge closes c for a message over the maximum: 1009, saying the
// maximum, counted as control_too_large.
func (t *talk) tooLarge(c *client) *wsframe.CloseError {
	reason := fmt.Sprintf("control message too large (max %d bytes)", t.max)
	if c.close(websocket.StatusMessageTooBig, reason, disconnectTooLarge) {
		c.log.Info("client closed: control message too large", "max", t.max)
	}
	return &wsframe.CloseError{Code: uint16(websocket.StatusMessageTooBig), Reason: reason}
}

// dataFrame handles one data message of c (op text or binary; p valid only
// during the call: publishing copies it). It returns nil to go on reading,
// or the close that ends the connection, which it has recorded. Over
// RELAY_FANOUT_CONTROL_RATE it waits before returning: the client is read
// more slowly, TCP pushes back on it, and nothing it sent is dropped.
func (t *talk) dataFrame(c *client, op byte, p []byte) *wsframe.CloseError {
	if !t.permitted {
		if c.close(StatusForbidden, reasonControlForbidden, disconnectCtlForbidden) {
			c.m.AuthRefused.Inc(metrics.AuthForbidden)
			c.log.Info("client closed: control message without control permission")
		}
		return &wsframe.CloseError{Code: uint16(StatusForbidden), Reason: reasonControlForbidden}
	}
	if len(p) > t.max { // the reader's limit stops it first
		return t.tooLarge(c)
	}
	msg := &nats.Msg{Subject: t.subject, Data: p}
	if op == wsframe.OpBinary {
		msg.Header = nats.Header{subjects.FormatHeader: []string{subjects.FormatBinary}}
	}
	if err := t.nc.PublishMsg(msg); err != nil {
		if c.close(websocket.StatusInternalError, reasonControlFailed, disconnectCtlFailed) {
			c.log.Warn("client closed: control message not published", "err", err)
		}
		return &wsframe.CloseError{Code: uint16(websocket.StatusInternalError), Reason: reasonControlFailed}
	}
	t.m.ControlMessages.Inc()
	t.pace(c)
	return nil
}

// pace waits while the client is over its rate, or until it is closed;
// false if it was closed meanwhile.
func (t *talk) pace(c *client) bool {
	if t.limiter == nil {
		return true
	}
	res := t.limiter.Reserve()
	d := res.Delay()
	if d <= 0 {
		return true
	}
	t.m.ControlThrottled.Inc()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-c.closing:
		res.Cancel()
		return false
	}
}
