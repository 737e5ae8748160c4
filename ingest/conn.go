package ingest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tcpproto"
)

// Refusal reasons: short local names for the typed label values of
// relay_ingest_refused_total{reason}, declared in shared/metrics.
const (
	reasonBadHandshake       = metrics.IngestBadHandshake
	reasonHandshakeTimeout   = metrics.IngestHandshakeTimeout
	reasonTooLarge           = metrics.IngestTooLarge
	reasonTruncated          = metrics.IngestTruncated
	reasonTooManyConnections = metrics.IngestTooManyConnections
	reasonPublishFailed      = metrics.IngestPublishFailed
	reasonShutdown           = metrics.IngestShutdown
	reasonUnauthorized       = metrics.IngestUnauthorized // no, bad or expired token at the handshake
	reasonForbidden          = metrics.IngestForbidden    // valid token, channel not permitted
	reasonTokenExpired       = metrics.IngestTokenExpired // the token's exp ended a sending connection
	reasonUpstream           = metrics.IngestUpstream
	reasonStoreFailed        = metrics.IngestStoreFailed
	reasonAckNotDurable      = metrics.IngestAckNotDurable
)

// Format header values (docs/architecture.md, NATS). A binary message
// always carries binaryHeader; a text message carries textHeader only with
// RELAY_INGEST_TEXT_HEADER. Without a header the contract's rule (valid
// UTF-8 is text) gives every consumer the same answer, since ingest's text
// messages are exactly its valid UTF-8 lines, and the header would cost
// more than half of ingest's throughput: nats.go serialises a Msg's header
// map on every publish and the NATS server parses it again (see
// BenchmarkPublish and docs/benchmarks.md).
var (
	textHeader   = nats.Header{subjects.FormatHeader: []string{subjects.FormatText}}
	binaryHeader = nats.Header{subjects.FormatHeader: []string{subjects.FormatBinary}}
)

// senderConn is one TCP sender.
type senderConn struct {
	s    *Server
	raw  net.Conn // as accepted
	spec config.Listener
	br   *bufio.Reader

	// remote is the client: the socket peer, or who a trusted PROXY header names.
	remote   net.Addr
	release  func() // gives back the per-address slot; nil if none was taken
	peerName string // an mTLS sender's certificate common name
	idle     *idleReader
	throttle *rate.Limiter // RELAY_INGEST_MAX_RATE; nil: unlimited

	mu       sync.Mutex
	conn     net.Conn // raw, or raw wrapped in PROXY and TLS; written under mu
	stopping bool     // shutdown set a read deadline: a timeout is the end
	aborted  bool     // abortRead set a read deadline
	expired  bool     // the token's exp set a read deadline: a timeout is the end

	// wmu serializes every write to the sender (+OK, +ACK, -ERR lines and
	// control messages); wpending is what a timed-out write left unwritten,
	// sent before anything else so no line lands inside a control frame.
	wmu      sync.Mutex
	wpending []byte

	msgs, bytes int
	ledger      *ledger // which of msgs NATS has confirmed (core NATS channels)
	st          *storer // durable channels: publishes with acks, counts what is stored
	ack         *acker  // the sender asked for +ACK lines
}

func newSenderConn(s *Server, conn net.Conn, spec config.Listener) *senderConn {
	return &senderConn{s: s, raw: conn, conn: conn, spec: spec, remote: conn.RemoteAddr(), throttle: newThrottle(s.cfg.MaxRate), ledger: newLedger(s.k)}
}

// setConn replaces the connection read from (PROXY and TLS wrappers).
func (c *senderConn) setConn(nc net.Conn) {
	c.mu.Lock()
	c.conn = nc
	c.mu.Unlock()
}

// stopReading makes reads end at deadline (shutdown).
func (c *senderConn) stopReading(deadline time.Time) {
	c.mu.Lock()
	c.stopping = true
	conn := c.conn
	c.mu.Unlock()
	conn.SetReadDeadline(deadline)
}

// setReadDeadline applies t unless shutdown or the token's expiry has set
// its own, shorter one.
func (c *senderConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping && !c.expired && !c.aborted {
		c.conn.SetReadDeadline(t)
	}
}

// abortRead makes a blocked read return now, and every later one: durable
// storing has failed and the sender is to be told at once.
func (c *senderConn) abortRead() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.conn.SetReadDeadline(time.Now())
}

// expire ends reading when the token expires: the read in progress returns
// a timeout, what was read before is published, and the sender is told.
func (c *senderConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping {
		c.expired = true
		c.conn.SetReadDeadline(time.Now())
	}
}

func (c *senderConn) isExpired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

func (c *senderConn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// serve runs the connection: handshake (on * listeners), then frame and
// publish until EOF, an error, or shutdown. It logs once, when it ends.
func (c *senderConn) serve() {
	s := c.s
	s.m.Connections.Inc()
	defer s.m.Connections.Dec()
	defer func() {
		c.conn.Close()
		if c.release != nil {
			c.release()
		}
	}()
	if err := c.secure(); err != nil {
		return
	}
	remote := c.remote.String()
	var r io.Reader = c.conn
	if c.spec.Idle > 0 {
		c.idle = &idleReader{c: c, idle: c.spec.Idle}
		r = c.idle
	}
	c.br = bufio.NewReaderSize(r, s.cfg.ReadBuffer)

	h := handshake{Channel: c.spec.Channel}
	var id auth.Identity
	if c.spec.Handshake() {
		var err error
		if h, id, err = c.handshake(); err != nil {
			return
		}
	}
	channel := h.Channel
	log := s.log.With("remote", remote, "channel", channel, "listener", c.spec.Addr)
	if id.Sub != "" {
		log = log.With("sub", id.Sub)
	}
	if c.peerName != "" {
		log = log.With("cert", c.peerName)
	}
	if h.Session != "" {
		log = log.With("session", h.Session, "first", h.First)
	}
	if !id.Expires.IsZero() {
		t := time.AfterFunc(time.Until(id.Expires), c.expire)
		defer t.Stop()
	}
	log.Debug("sender connected")
	if c.idle != nil {
		c.idle.on = true
	}
	// Counted (presence) and, on a control channel, written to from here
	// until the pump ends; leaving is idempotent.
	s.router.join(c, channel)
	defer s.router.leave(c, channel)
	if s.durable.Matches(channel) {
		c.st = newStorer(c, channel, h)
		if h.Ack {
			c.ack = startAcker(c, c.st)
		}
	}

	err := c.pump(channel)
	// Departure first: the control writer stops before the last line.
	s.router.leave(c, channel)
	if c.st != nil {
		// The last acks are due before the sender hears how many are stored.
		deadline := time.Now().Add(drainAcks)
		if c.isStopping() {
			deadline = s.flushBy()
		}
		if serr := c.st.finish(deadline); serr != nil {
			err = serr
		}
		if c.ack != nil {
			c.ack.close()
		}
	}
	switch {
	case c.isExpired() && (err == nil || isTimeout(err) || errors.Is(err, ErrTruncated)):
		s.m.AuthRefused.Inc(metrics.AuthExpired)
		c.fail(reasonTokenExpired, errTokenExpired, "token expired", "channel", channel, "sub", id.Sub)
	case err == nil:
		log.Debug("sender disconnected", "messages", c.msgs, "bytes", c.bytes)
	case errors.Is(err, errStore):
		c.fail(reasonStoreFailed, err, fmt.Sprintf("store failed: %d messages stored", c.accepted()))
	case c.idle != nil && isTimeout(err) && !c.isStopping():
		c.fail(reasonIdleTimeout, err, fmt.Sprintf(replyIdleTimeoutTmpl, c.spec.Idle))
	case errors.Is(err, ErrTooLarge):
		c.fail(reasonTooLarge, err, fmt.Sprintf("message too large (max %d bytes)", s.cfg.MaxMessage))
	case c.isStopping() && (isTimeout(err) || errors.Is(err, ErrTruncated) || errors.Is(err, errHeld)):
		// Shutdown: what was read is published; say how much, once NATS has
		// confirmed it, so the sender knows exactly where to resume.
		reply := c.shutdownReply()
		if errors.Is(err, errHeld) {
			s.m.Unpublished.Inc(metrics.UnpublishedShutdown)
			c.fail(reasonShutdown, err, reply)
			return
		}
		c.errLine(reply)
		log.Info("sender closed at shutdown", "messages", c.msgs, "bytes", c.bytes)
	case errors.Is(err, ErrTruncated):
		c.fail(reasonTruncated, err, "truncated frame")
	case errors.Is(err, errHeld), errors.Is(err, errLost):
		s.m.Unpublished.Inc(metrics.UnpublishedUpstream)
		c.fail(reasonUpstream, err, fmt.Sprintf("upstream unavailable: %d messages accepted", c.accepted()))
	case errors.Is(err, errPublish):
		s.m.Unpublished.Inc(metrics.UnpublishedPublishFailed)
		c.fail(reasonPublishFailed, err, fmt.Sprintf("publish failed; message not delivered: %d messages accepted", c.accepted()))
	default:
		log.Info("sender connection ended", "err", err, "messages", c.msgs, "bytes", c.bytes)
	}
}

// shutdownReply confirms this connection's messages with NATS (a flush
// round trip: the server has processed everything published before it)
// and words the sender's last line: N is how many of its first messages
// NATS confirmed, so the sender knows exactly where to resume.
func (c *senderConn) shutdownReply() string {
	var n int
	if c.st != nil {
		n = c.accepted() // acks already awaited
	} else {
		n = c.ledger.flush(c.msgs, max(time.Until(c.s.flushBy()), 100*time.Millisecond))
	}
	if n < c.msgs {
		c.s.logRefusal("shutdown_unconfirmed", "ingest: NATS did not confirm all of a sender's messages at shutdown",
			"remote", c.conn.RemoteAddr().String(), "published", c.msgs, "confirmed", n)
	}
	return fmt.Sprintf("server shutting down: %d messages accepted", n)
}

// accepted is how many of the sender's first messages are safe: stored by
// the stream (durable channels) or confirmed by NATS (core NATS channels).
func (c *senderConn) accepted() int {
	if c.st != nil {
		return int(c.st.stored.Load())
	}
	return c.ledger.confirmed(c.msgs)
}

var errTokenExpired = errors.New("ingest: token expired")

// handshake reads `CHANNEL [TOKEN] [+ack [SESSION FIRST]]\n` within the timeout, checks that
// the token may send to CHANNEL and that +ack comes with a durable channel,
// and answers +OK.
func (c *senderConn) handshake() (handshake, auth.Identity, error) {
	s := c.s
	c.setReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h, err := readHandshake(c.br)
	if err != nil {
		switch {
		case c.isStopping() && isTimeout(err):
			c.fail(reasonShutdown, err, "server shutting down: 0 messages accepted")
		case errors.Is(err, ErrBadHandshake):
			c.fail(reasonBadHandshake, err, strings.TrimPrefix(err.Error(), "ingest: "))
		case isTimeout(err):
			c.fail(reasonHandshakeTimeout, err, fmt.Sprintf("handshake timeout: send CHANNEL [TOKEN] within %s", s.cfg.HandshakeTimeout))
		default: // the sender went away before a full line
			c.fail(reasonBadHandshake, err, "no handshake line")
		}
		return handshake{}, auth.Identity{}, err
	}
	id, err := s.auth.Authorize(h.Token, auth.ActionSend, h.Channel)
	if err != nil {
		c.refuseAuth(err, h.Channel, id.Sub)
		return handshake{}, id, err
	}
	if h.Ack && !s.durable.Matches(h.Channel) {
		// +ACK N means "stored"; core NATS stores nothing, so promising it
		// would be a lie.
		err := fmt.Errorf("%w: %s on a channel that is not durable", ErrBadHandshake, tcpproto.AckOption)
		c.fail(reasonAckNotDurable, err, fmt.Sprintf("%s needs a durable channel; %s is not durable (RELAY_DURABLE_CHANNELS); send without %s", tcpproto.AckOption, h.Channel, tcpproto.AckOption))
		return handshake{}, id, err
	}
	c.setReadDeadline(time.Time{})
	if _, err := c.send(tcpproto.OKLine, s.cfg.HandshakeTimeout); err != nil {
		return handshake{}, id, err
	}
	return h, id, nil
}

// refuseAuth answers a handshake the token does not allow: -ERR
// unauthorized: … or -ERR forbidden: … (fixed texts, never the token).
func (c *senderConn) refuseAuth(err error, channel, sub string) {
	var r *auth.Refusal
	if !errors.As(err, &r) {
		r = auth.ErrInvalid
	}
	reason := reasonUnauthorized
	if !r.Unauthorized() {
		reason = reasonForbidden
	}
	c.s.m.AuthRefused.Inc(metrics.AuthReason(string(r.Reason)))
	c.fail(reason, r, r.Text, "channel", channel, "sub", sub, "auth_reason", string(r.Reason))
}

// pump frames the stream and publishes each message in order. Publishing
// blocks while NATS cannot take more, and so does reading: TCP pushes back.
func (c *senderConn) pump(channel string) error {
	s := c.s
	fr, err := newFramer(c.spec.Framing, c.br, s.cfg.MaxMessage)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: s.mapper.Subject(channel)}
	var textHdr nats.Header // nil: text travels without a header
	if s.cfg.TextHeader {
		textHdr = textHeader
	}
	for {
		data, text, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		hdr := binaryHeader
		if text {
			hdr = textHdr
		}
		m := msg
		if c.st != nil {
			m = c.st.message(msg.Subject, data, hdr)
		} else {
			msg.Data, msg.Header = data, hdr
		}
		// Durable messages are confirmed by their acks (and resent when a
		// dropped connection took them), not by the ledger's round trips.
		if c.st == nil && !c.ledger.beforePublish(c.msgs) {
			return errLost
		}
		if err := c.publish(m); err != nil {
			return err
		}
		c.msgs++
		c.bytes += len(data)
		s.m.Messages.Inc()
		s.m.Bytes.Add(float64(len(data)))
		if c.throttle != nil && !c.throttle.Allow() {
			// Over RELAY_INGEST_MAX_RATE: pause before reading on.
			s.m.Throttled.Inc()
			if err := c.throttle.Wait(s.hardCtx); err != nil {
				return nil
			}
		}
	}
}

var (
	errPublish = errors.New("ingest: publish failed")
	// errHeld: NATS could not take a message for as long as ingest holds
	// one (RELAY_INGEST_OUTAGE_HOLD, or until the shutdown deadline).
	errHeld = errors.New("ingest: NATS unavailable")
	// errLost: some of the sender's messages went out on a NATS connection
	// that dropped before NATS confirmed them.
	errLost = errors.New("ingest: NATS connection lost with messages unconfirmed")
)

// publish hands msg to NATS. The connection has no reconnect buffer, so
// while NATS is down a publish fails at once instead of being buffered and
// replayed later: the message is held, reading stops (TCP pushes back on
// the sender), and publishing resumes when NATS is back. Only a message NATS
// took counts as accepted. Held longer than RELAY_INGEST_OUTAGE_HOLD, or past
// the shutdown deadline, it fails with errHeld.
func (c *senderConn) publish(msg *nats.Msg) error {
	s := c.s
	var heldSince time.Time
	for {
		// A stalled confirmation means NATS has stopped answering while the
		// connection still looks up (a frozen server): publishing more
		// would only fill socket buffers that may never be read.
		if !s.k.stalled() {
			var err error
			if c.st != nil {
				err = c.st.send(msg)
			} else {
				err = s.nc.PublishMsg(msg)
			}
			if err == nil {
				if !heldSince.IsZero() {
					s.m.Held.Dec()
				}
				return nil
			}
			if permanent(err) {
				if !heldSince.IsZero() {
					s.m.Held.Dec()
				}
				return fmt.Errorf("%w: %s: %w", errPublish, msg.Subject, err)
			}
		}
		if heldSince.IsZero() {
			heldSince = time.Now()
			s.m.Held.Inc()
			// Mark what went out on this connection before it dropped, so
			// the count told later is exact.
			c.ledger.take(c.msgs)
		}
		s.m.PublishRetries.Inc()
		if err := s.waitUpstream(heldSince.Add(s.cfg.OutageHold)); err != nil {
			s.m.Held.Dec()
			return fmt.Errorf("%w: %s: held %s: %w", errHeld, msg.Subject, time.Since(heldSince).Round(time.Millisecond), err)
		}
		if c.st == nil && c.ledger.lost(c.msgs) {
			// NATS is back on a new connection, but what went out on the old
			// one was never confirmed: stop here and tell the sender. (A
			// durable connection's storer resends those instead.)
			s.m.Held.Dec()
			return errLost
		}
	}
}

// permanent reports publish errors that waiting for NATS cannot cure.
func permanent(err error) bool {
	return errors.Is(err, errStore) || errors.Is(err, errHeld) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrMaxPayload) ||
		errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrHeadersNotSupported) ||
		errors.Is(err, nats.ErrInvalidConnection)
}

// fail tells the sender why it is being closed, counts and logs it (with
// extra attributes, e.g. channel and sub).
func (c *senderConn) fail(reason metrics.IngestRefusal, err error, msg string, extra ...any) {
	c.s.m.Refused.Inc(reason)
	args := append([]any{"remote", c.remote.String(),
		"listener", c.spec.Addr, "reason", reason, "err", err, "messages", c.msgs}, extra...)
	c.s.logRefusal(reason, "ingest: sender closed with error", args...)
	c.errLine(msg)
}

// errLine writes the sender's last line, then closes gently: a sender
// still writing would otherwise have its unread bytes answered with a TCP
// reset, which can discard the -ERR line before the sender reads it. So
// ingest half-closes and discards what still arrives for a moment (bounded
// in time and bytes) before serve closes the connection.
func (c *senderConn) errLine(msg string) {
	if _, err := c.send(tcpproto.ErrLine(msg), time.Second); err != nil {
		return
	}
	if tc, ok := c.conn.(interface{ CloseWrite() error }); ok && tc.CloseWrite() == nil {
		c.conn.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(c.conn, lingerBytes))
	}
}

// send is the sender's one serialized writer. Within timeout it first
// writes what an earlier timed-out write left (wpending), then b. It
// reports whether b was taken: written, or partly written with the rest
// pending (sent before anything else, so frames and lines are never
// interleaved). When the pending bytes cannot be written in time, b is not
// taken and err is the timeout: the caller keeps b and may try again.
func (c *senderConn) send(b []byte, timeout time.Duration) (taken bool, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(timeout))
	defer conn.SetWriteDeadline(time.Time{})
	if len(c.wpending) > 0 {
		n, err := conn.Write(c.wpending)
		c.wpending = c.wpending[n:]
		if err != nil {
			return false, err
		}
		c.wpending = nil
	}
	n, err := conn.Write(b)
	if err != nil && n > 0 && n < len(b) && isTimeout(err) {
		c.wpending = append([]byte(nil), b[n:]...)
		return true, nil
	}
	return err == nil, err
}

// lingerTime and lingerBytes bound errLine's gentle close.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 4 << 20
)

// logRefusal rate-limits refusal logs per reason, as fanout does (one line
// per reason per second, saying how many it stands for): a misbehaving fleet
// must not flood the log. The counter still counts every one.
func (s *Server) logRefusal(reason metrics.IngestRefusal, msg string, args ...any) {
	if n, ok := s.refusals.Allow(string(reason)); ok {
		s.log.Warn(msg, append(args, "suppressed", n)...)
	}
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
