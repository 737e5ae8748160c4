package ingest

import (
	"bufio"
	"context"
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
	reasonUnauthorized       = metrics.IngestUnauthorized
	reasonForbidden          = metrics.IngestForbidden
	reasonTokenExpired       = metrics.IngestTokenExpired
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
	conn net.Conn
	spec config.Listener
	br   *bufio.Reader

	mu       sync.Mutex
	stopping bool // shutdown set a read deadline: a timeout is the end
	expired  bool // the token's exp set a read deadline: a timeout is the end

	msgs, bytes int
}

func newSenderConn(s *Server, conn net.Conn, spec config.Listener) *senderConn {
	return &senderConn{s: s, conn: conn, spec: spec}
}

// stopReading makes reads end at deadline (shutdown).
func (c *senderConn) stopReading(deadline time.Time) {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.conn.SetReadDeadline(deadline)
}

// setReadDeadline applies t unless shutdown has set its own, shorter one.
func (c *senderConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping {
		c.conn.SetReadDeadline(t)
	}
}

func (c *senderConn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
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

// serve runs the connection: handshake (on * listeners), then frame and
// publish until EOF, an error, or shutdown. It logs once, when it ends.
func (c *senderConn) serve() {
	s := c.s
	s.m.Connections.Inc()
	defer s.m.Connections.Dec()
	defer c.conn.Close()
	remote := c.conn.RemoteAddr().String()
	c.br = bufio.NewReaderSize(c.conn, s.cfg.ReadBuffer)

	channel := c.spec.Channel
	var id auth.Identity
	if c.spec.Handshake() {
		var err error
		if channel, id, err = c.handshake(); err != nil {
			return
		}
	}
	log := s.log.With("remote", remote, "channel", channel, "listener", c.spec.Addr)
	if id.Sub != "" {
		log = log.With("sub", id.Sub)
	}
	log.Debug("sender connected")
	if !id.Expires.IsZero() {
		t := time.AfterFunc(time.Until(id.Expires), c.expire)
		defer t.Stop()
	}

	err := c.pump(channel)
	switch {
	case c.isExpired() && (err == nil || isTimeout(err) || errors.Is(err, ErrTruncated)):
		s.m.AuthRefused.Inc(metrics.AuthExpired)
		c.fail(reasonTokenExpired, errTokenExpired, "token expired", "channel", channel, "sub", id.Sub)
	case err == nil:
		log.Debug("sender disconnected", "messages", c.msgs, "bytes", c.bytes)
	case errors.Is(err, ErrTooLarge):
		c.fail(reasonTooLarge, err, fmt.Sprintf("message too large (max %d bytes)", s.cfg.MaxMessage))
	case errors.Is(err, ErrTruncated) && c.isStopping():
		c.fail(reasonShutdown, err, "server shutting down")
	case errors.Is(err, ErrTruncated):
		c.fail(reasonTruncated, err, "truncated frame")
	case errors.Is(err, errPublish):
		c.fail(reasonPublishFailed, err, "publish failed; message not delivered")
	case c.isStopping() && isTimeout(err):
		c.errLine("server shutting down")
		log.Info("sender closed at shutdown", "messages", c.msgs, "bytes", c.bytes)
	default:
		log.Info("sender connection ended", "err", err, "messages", c.msgs, "bytes", c.bytes)
	}
}

var errTokenExpired = errors.New("ingest: token expired")

// handshake reads `CHANNEL [TOKEN]\n` within the timeout, checks that the
// token may send to CHANNEL, and answers +OK.
func (c *senderConn) handshake() (string, auth.Identity, error) {
	s := c.s
	c.setReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	h, err := readHandshake(c.br)
	if err != nil {
		switch {
		case c.isStopping() && isTimeout(err):
			c.fail(reasonShutdown, err, "server shutting down")
		case errors.Is(err, ErrBadHandshake):
			c.fail(reasonBadHandshake, err, strings.TrimPrefix(err.Error(), "ingest: "))
		case isTimeout(err):
			c.fail(reasonHandshakeTimeout, err, fmt.Sprintf("handshake timeout: send CHANNEL [TOKEN] within %s", s.cfg.HandshakeTimeout))
		default: // the sender went away before a full line
			c.fail(reasonBadHandshake, err, "no handshake line")
		}
		return "", auth.Identity{}, err
	}
	id, err := s.auth.Authorize(h.Token, auth.ActionSend, h.Channel)
	if err != nil {
		c.refuseAuth(err, h.Channel, id.Sub)
		return "", id, err
	}
	return c.acceptHandshake(h.Channel, id)
}

// acceptHandshake answers +OK.
func (c *senderConn) acceptHandshake(channel string, id auth.Identity) (string, auth.Identity, error) {
	c.setReadDeadline(time.Time{})
	c.conn.SetWriteDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	if _, err := c.conn.Write(tcpproto.OKLine); err != nil {
		return "", id, err
	}
	c.conn.SetWriteDeadline(time.Time{})
	return channel, id, nil
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
		msg.Data = data
		msg.Header = binaryHeader
		if text {
			msg.Header = textHdr
		}
		if err := s.publish(msg); err != nil {
			return err
		}
		c.msgs++
		c.bytes += len(data)
		s.m.Messages.Inc()
		s.m.Bytes.Add(float64(len(data)))
	}
}

var errPublish = errors.New("ingest: publish failed")

// publish hands msg to NATS, waiting while NATS cannot take more (the
// reconnect buffer is full while disconnected). It gives up only when the
// connection is closed or the shutdown grace runs out.
func (s *Server) publish(msg *nats.Msg) error {
	wait := 5 * time.Millisecond
	for {
		err := s.nc.PublishMsg(msg)
		if err == nil {
			return nil
		}
		if !errors.Is(err, nats.ErrReconnectBufExceeded) {
			return fmt.Errorf("%w: %s: %w", errPublish, msg.Subject, err)
		}
		s.m.PublishRetries.Inc()
		if err := sleepCtx(s.hardCtx, wait); err != nil {
			return fmt.Errorf("%w: %s: NATS still unavailable at shutdown deadline", errPublish, msg.Subject)
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// fail tells the sender why it is being closed, counts and logs it (with
// extra attributes, e.g. channel and sub).
func (c *senderConn) fail(reason metrics.IngestRefusal, err error, msg string, extra ...any) {
	c.s.m.Refused.Inc(reason)
	args := append([]any{"remote", c.conn.RemoteAddr().String(),
		"listener", c.spec.Addr, "reason", reason, "err", err, "messages", c.msgs}, extra...)
	c.s.logRefusal(reason, "ingest: sender closed with error", args...)
	c.errLine(msg)
}

func (c *senderConn) errLine(msg string) {
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.conn.Write(tcpproto.ErrLine(msg))
}

// logRefusal rate-limits refusal logs per reason: a misbehaving fleet must
// not flood the log. The counter still counts every one.
func (s *Server) logRefusal(reason metrics.IngestRefusal, msg string, args ...any) {
	v, _ := refusalLogs.LoadOrStore(reason, &rate.Sometimes{First: 10, Interval: time.Second})
	v.(*rate.Sometimes).Do(func() { s.log.Warn(msg, args...) })
}

var refusalLogs sync.Map // reason -> *rate.Sometimes

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
