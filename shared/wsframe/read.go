package wsframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
	"unicode/utf8"
)

// Status codes relay sends or checks (RFC 6455 7.4.1).
const (
	StatusNormalClosure   uint16 = 1000
	StatusGoingAway       uint16 = 1001
	StatusProtocolError   uint16 = 1002
	StatusUnsupportedData uint16 = 1003
	StatusNoStatus        uint16 = 1005
	StatusInvalidPayload  uint16 = 1007
	StatusPolicyViolation uint16 = 1008
	StatusMessageTooBig   uint16 = 1009
	StatusInternalError   uint16 = 1011
	StatusServiceRestart  uint16 = 1012
)

// Why ReadLoop stopped (see ReadLoop).
var (
	// ErrProtocol: the client broke RFC 6455 (wrapped with what it did).
	ErrProtocol = errors.New("wsframe: protocol error")
	// ErrTooBig: a data message over the read limit.
	ErrTooBig = errors.New("wsframe: message too big")
	// ErrPingTimeout: a ping went unanswered past the Pinger's timeout.
	ErrPingTimeout = errors.New("wsframe: ping timeout")
)

// CloseError is a close frame's code and reason: what the client sent, or
// what the server is to send.
type CloseError struct {
	Code   uint16
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket close %d %q", e.Code, e.Reason)
}

// DataFunc receives a client's data message: op is OpText or OpBinary. It
// returns nil to go on reading, or the close frame that ends the connection.
// With a read limit of 0 it is called at the first frame's header with p nil
// and the payload is never read (nor buffered); otherwise p is the whole
// message, unmasked (text checked for UTF-8), valid only during the call.
type DataFunc func(op byte, p []byte) *CloseError

// aLongTimeAgo, as a read deadline, wakes a blocked ReadLoop at once.
var aLongTimeAgo = time.Unix(1, 0)

// ReadLoop reads the client's frames until reading ends: pings are answered,
// pongs noted, a close frame answered (echoing its code and reason), data
// messages handed to onData. It is run by one goroutine, which an idle
// connection keeps blocked in a read of the next frame header, holding no
// buffer; the functions on that path keep small frames (the rest is in
// functions that are not inlined), so that it fits, with a pong's handling,
// in the 2 KiB stack a goroutine starts with. It returns why it stopped:
//
//   - send != nil: the server must close with send: a protocol error (1002,
//     or 1007 for text that is not UTF-8; err wraps ErrProtocol), a message
//     over limit bytes (1009, ErrTooBig), or what onData returned (err nil).
//     AwaitClose then reads what is left of the handshake.
//   - err is a *CloseError: the client closed with that code; answered.
//   - err is ErrPingTimeout: the client left a ping unanswered.
//   - otherwise err is the connection's: it ended or was closed.
func (c *Conn) ReadLoop(limit int, onData DataFunc) (send *CloseError, err error) {
	var m message
	for {
		h, err := c.readHeader(true)
		if err != nil {
			return nil, err
		}
		if send, err := c.frame(&m, h, limit, onData); send != nil || err != nil {
			return send, err
		}
	}
}

// frame handles the frame whose header is h.
func (c *Conn) frame(m *message, h Header, limit int, onData DataFunc) (*CloseError, error) {
	if ce := c.checkHeader(h); ce != nil {
		c.broken = true
		return protocolError(ce)
	}
	if h.Op&0x8 != 0 {
		return c.control(h)
	}
	return c.data(m, h, limit, onData)
}

// message is the client data message being read, across its frames.
type message struct {
	op      byte // 0 when no message is open
	n       uint64
	p       []byte
	discard bool // its payload is dropped unread
}

// data handles one data frame of the message m.
//
//go:noinline
func (c *Conn) data(m *message, h Header, limit int, onData DataFunc) (*CloseError, error) {
	c.left = h.Len // until the payload is read: AwaitClose skips it
	switch {
	case h.Op == OpContinuation && m.op == 0:
		return protocolError(&CloseError{StatusProtocolError, "continuation frame without a message"})
	case h.Op != OpContinuation && m.op != 0:
		return protocolError(&CloseError{StatusProtocolError, "new message before the last one ended"})
	}
	if h.Op != OpContinuation {
		*m = message{op: h.Op}
		switch {
		case c.closeSent.Load():
			m.discard = true // closing: only the client's close frame matters
		case limit <= 0:
			if send := onData(m.op, nil); send != nil {
				return send, nil
			}
			m.discard = true
		}
	}
	m.n += h.Len
	if !m.discard && m.n > uint64(limit) {
		return &CloseError{StatusMessageTooBig, fmt.Sprintf("message over %d bytes", limit)}, ErrTooBig
	}
	c.left = 0
	if m.discard {
		if err := c.skip(h.Len, true); err != nil {
			return nil, err
		}
	} else {
		start := len(m.p)
		m.p = append(m.p, make([]byte, h.Len)...)
		if err := c.fill(m.p[start:], true); err != nil {
			return nil, err
		}
		Mask(m.p[start:], h.Mask)
	}
	if !h.Fin {
		return nil, nil
	}
	op, p, discard := m.op, m.p, m.discard
	*m = message{}
	if discard {
		return nil, nil
	}
	if op == OpText && !utf8.Valid(p) {
		return protocolError(&CloseError{StatusInvalidPayload, "text message is not valid UTF-8"})
	}
	return onData(op, p), nil
}

// protocolError returns send, for a client that broke the protocol, with
// ErrProtocol.
//
//go:noinline
func protocolError(send *CloseError) (*CloseError, error) {
	return send, fmt.Errorf("%w: %s", ErrProtocol, send.Reason)
}

// checkHeader returns the 1002 close for a header a client may not send.
//
//go:noinline
func (c *Conn) checkHeader(h Header) *CloseError {
	switch {
	case c.hdr[0]&0x70 != 0:
		return &CloseError{StatusProtocolError, "reserved bits set without an extension"}
	case !h.Masked:
		return &CloseError{StatusProtocolError, "client frame not masked"}
	case h.Op > OpBinary && h.Op < OpClose, h.Op > OpPong:
		return &CloseError{StatusProtocolError, fmt.Sprintf("unknown opcode %d", h.Op)}
	case h.Op&0x8 != 0 && (!h.Fin || h.Len > MaxControlPayload):
		return &CloseError{StatusProtocolError, "control frame fragmented or over 125 bytes"}
	case h.Len>>63 != 0:
		return &CloseError{StatusProtocolError, "payload length out of range"}
	}
	return nil
}

// control handles a ping, pong or close frame.
func (c *Conn) control(h Header) (*CloseError, error) {
	p := make([]byte, h.Len) // at most 125 bytes, and only when a client sends one
	if err := c.fill(p, true); err != nil {
		return nil, err
	}
	Mask(p, h.Mask)
	if h.Op == OpPong {
		c.pingAt.Store(0) // answered
		return nil, nil
	}
	return c.pingOrClose(h.Op, p)
}

// pingOrClose answers a client's ping or close frame.
//
//go:noinline
func (c *Conn) pingOrClose(op byte, p []byte) (*CloseError, error) {
	if op == OpPing {
		if err := c.writeControl(OpPong, p); err != nil && !errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		return nil, nil
	}
	ce, send := parseClose(p)
	if send != nil {
		return protocolError(send)
	}
	c.replyClose(p)
	return nil, ce
}

// parseClose reads a client's close payload, or returns the close to send
// for a bad one.
func parseClose(p []byte) (*CloseError, *CloseError) {
	if len(p) == 0 {
		return &CloseError{Code: StatusNoStatus}, nil
	}
	if len(p) < 2 {
		return nil, &CloseError{StatusProtocolError, "close payload of 1 byte"}
	}
	code := binary.BigEndian.Uint16(p)
	if !validCloseCode(code) {
		return nil, &CloseError{StatusProtocolError, fmt.Sprintf("invalid close code %d", code)}
	}
	if !utf8.Valid(p[2:]) {
		return nil, &CloseError{StatusInvalidPayload, "close reason is not valid UTF-8"}
	}
	return &CloseError{code, string(p[2:])}, nil
}

// validCloseCode: what a peer may send in a close frame (RFC 6455 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code == 1004 || code == 1005 || code == 1006 || code == 1015:
		return false
	case code >= 1000 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// replyClose answers the client's close frame with the same payload, unless
// the server's close frame has gone out already (then the handshake is done).
func (c *Conn) replyClose(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent.Swap(true) {
		return
	}
	var b [2 + MaxControlPayload]byte
	frame, _ := AppendControl(b[:0], OpClose, p, nil)
	_ = c.writeLockedWithin(frame, nil, min(c.timeout, time.Second))
}

// AwaitClose reads (and drops) the client's frames until its close frame,
// the end of the connection or deadline: the rest of a close handshake the
// server began after ReadLoop returned. A connection with a protocol error
// cannot be parsed further; its bytes are dropped until it ends. Closing
// the socket with unread bytes would reset it, and the client could lose
// the close frame. The connection must no longer be in a Pinger.
func (c *Conn) AwaitClose(deadline time.Time) {
	if c.nc.SetReadDeadline(deadline) != nil {
		return
	}
	if err := c.skip(c.left, false); err != nil {
		return
	}
	for {
		h, err := c.readHeader(false)
		if err != nil {
			return
		}
		if c.broken || c.checkHeader(h) != nil {
			_ = c.skip(1<<62, false)
			return
		}
		if err := c.skip(h.Len, false); err != nil || h.Op == OpClose {
			return
		}
	}
}

// readHeader reads the next frame header into c.hdr.
func (c *Conn) readHeader(woken bool) (Header, error) {
	if err := c.fill(c.hdr[:2], woken); err != nil {
		return Header{}, err
	}
	n := HeaderLen(c.hdr[0], c.hdr[1])
	if err := c.fill(c.hdr[2:n], woken); err != nil {
		return Header{}, err
	}
	h, _, _ := ParseHeader(c.hdr[:n])
	return h, nil
}

// skip reads and drops n bytes.
func (c *Conn) skip(n uint64, woken bool) error {
	var b [512]byte
	for n > 0 {
		k := min(n, uint64(len(b)))
		if err := c.fill(b[:k], woken); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// fill reads len(p) bytes: first what the client sent behind its upgrade
// request, then from the socket. With woken, a read deadline is a Pinger's
// wake-up (see wake), not an error.
func (c *Conn) fill(p []byte, woken bool) error {
	for len(p) > 0 {
		if len(c.pending) > 0 {
			p = c.takePending(p)
			continue
		}
		n, err := c.nc.Read(p)
		p = p[n:]
		if err != nil {
			if err = c.readFailed(err, woken); err != nil {
				return err
			}
		}
	}
	return nil
}

// takePending fills p from the bytes read with the upgrade request and
// returns what is left of p.
//
//go:noinline
func (c *Conn) takePending(p []byte) []byte {
	n := copy(p, c.pending)
	if c.pending = c.pending[n:]; len(c.pending) == 0 {
		c.pending = nil
	}
	return p[n:]
}

// readFailed returns err, unless it is a Pinger's wake-up (see wake) and
// the ping is not late: then the read goes on. The deadline is cleared
// before the flag is read, so a wake-up that comes meanwhile sets it again.
//
//go:noinline
func (c *Conn) readFailed(err error, woken bool) error {
	if !woken || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if err := c.nc.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	if c.pingLate.Load() {
		c.broken = true // the read may have stopped inside a frame
		return ErrPingTimeout
	}
	return nil
}

// wake makes the reader's blocked read return, to run readFailed.
func (c *Conn) wake() { _ = c.nc.SetReadDeadline(aLongTimeAgo) }

// sendPing runs in a goroutine of its own (see Pinger): the write may wait
// for the write lock or a full socket, and the reader's stack stays small.
// A ping that cannot be sent is not answered, which the Pinger finds.
func (c *Conn) sendPing() { _ = c.writeControl(OpPing, nil) }
