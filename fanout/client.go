package fanout

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/wsframe"
)

// Close reasons sent to clients (at most 123 bytes each).
const (
	reasonSlowConsumer = "slow consumer"
	reasonClientData   = "receive-only: clients may not send data"
	reasonShutdown     = "server shutting down"
	reasonPingTimeout  = "ping timeout"
	reasonWriteFailed  = "write failed"
	reasonNATSLost     = "upstream connection lost; messages may have been missed"
)

// Disconnect reasons: short local names for the typed label values of
// relay_fanout_disconnects_total{reason}, declared in shared/metrics.
const (
	disconnectClientClosed     = metrics.DisconnectClientClosed
	disconnectSlowConsumer     = metrics.DisconnectSlowConsumer
	disconnectNATSSlowConsumer = metrics.DisconnectNATSSlowConsumer
	disconnectClientData       = metrics.DisconnectClientData
	disconnectWriteError       = metrics.DisconnectWriteError
	disconnectPingTimeout      = metrics.DisconnectPingTimeout
	disconnectShutdown         = metrics.DisconnectShutdown
	disconnectNATSLost         = metrics.DisconnectNATSLost
	disconnectProtocolError    = metrics.DisconnectProtocolError
)

// writerLinger is how long a client's writer goroutine waits for more to
// write before it ends; a busy client keeps its writer, an idle one (most
// of them, on most channels) holds none.
const writerLinger = time.Second

// clientLimits are the per-client settings from config.Fanout.
type clientLimits struct {
	queueMsgs int
	// queueBytes is the budget: below it a client is never judged. Over it
	// the client must keep draining: if no write completes for slowGrace
	// it is closed as a slow consumer. maxBytes is the hard cap, however
	// fast it drains. Both count payload + msgOverhead per message.
	queueBytes   int
	maxBytes     int
	slowGrace    time.Duration
	writeTimeout time.Duration
	closeGrace   time.Duration // how long a close handshake may take before the TCP connection is cut
}

// client is one WebSocket receiver: its feed (a bounded queue filled by the
// channel's NATS callback, and the slow-consumer policy), a writer goroutine
// started on demand that drains it, and a reader that answers control frames
// and hands data messages to onData. Every byte on the wire is
// wsframe.Conn's.
type client struct {
	lim     clientLimits
	m       *metrics.Fanout
	log     *slog.Logger
	channel string
	// envelope: the client chose relay.v1.json, so it is sent each
	// message's shared envelope frame instead of the raw payload, and may
	// be sent events. Set before the client joins its channel.
	envelope bool

	idx int // position in channel.clients, guarded by channel.mu

	// talk: the client may talk back (a control channel); nil: its data is
	// refused. Set before serve, read by the reader only.
	talk *talk

	wake    chan struct{} // capacity 1: "the queue is not empty"
	closing chan struct{} // closed by the first close

	mu     sync.Mutex
	feed   feed // queued messages and their bounds
	closed bool
	// flushOnClose: send what is queued before the close frame.
	flushOnClose bool
	closeCode    websocket.StatusCode
	closeText    string
	reason       metrics.FanoutDisconnect
	conn         *wsframe.Conn
	pinger       *wsframe.Pinger
	forceClose   *time.Timer
	// writing: a writer goroutine runs (or is starting). It is started on
	// demand and ends after writerLinger without work, so an idle client
	// costs no goroutine and no stack for its writer.
	writing bool
	// stallTimer runs while the client is over its byte budget; it checks
	// that bc has written something since stallMark (see checkStall).
	stallTimer *time.Timer
	stallMark  uint64
	// expiry closes the client with 4401 at its token's exp.
	expiry *time.Timer
	// dur is the client's place in a durable channel (durable.go).
	dur durableState

	wg sync.WaitGroup // the writer

	// dataLimit is the largest data message the client may send (larger:
	// 1009). 0 means receive-only: a data message is handed to onData at
	// its first header, its payload never read.
	dataLimit int

	// Written by the writer only; read after it has exited.
	delivered int
	bytesOut  int
}

func newClient(channel string, lim clientLimits, m *metrics.Fanout, log *slog.Logger) *client {
	return &client{
		lim:     lim,
		feed:    feed{lim: lim},
		m:       m,
		log:     log,
		channel: channel,
		idx:     -1,
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
}

// enqueue adds msg to the client's queue without ever blocking. It returns
// false when the queue is at its hard cap (bytes or messages): the client
// cannot take msg and must be closed, because leaving it connected would
// hide a gap. Past the byte budget it still takes msg, but starts judging
// whether the client drains (checkStall): a burst is judged by draining,
// not by size. A message larger than the whole cap is still taken by an
// empty queue, so a big message closes nobody who is keeping up.
func (c *client) enqueue(msg *message) bool {
	if c.envelope {
		msg = msg.envelope()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return true
	}
	ok, over := c.feed.push(msg)
	if !ok {
		c.mu.Unlock()
		return false
	}
	if over && c.stallTimer == nil {
		c.stallMark = c.written()
		c.stallTimer = time.AfterFunc(c.lim.slowGrace, c.checkStall)
	}
	started := c.startWriterLocked()
	c.mu.Unlock()
	if !started {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// sendEvent queues an event frame (liveEvent, gapEvent, sendersEvent) to
// this client alone, in order with its messages. Plain clients are sent no
// events: it reports false for them. A client whose queue is at its hard
// cap cannot take the event and is cut as a slow consumer, as it would be
// for a message.
func (c *client) sendEvent(ev *message) bool {
	if !c.envelope {
		return false
	}
	if !c.enqueue(ev) {
		c.cutSlow()
		return false
	}
	return true
}

// written is how many bytes have reached the client's socket; c.mu held.
func (c *client) written() uint64 {
	if c.conn == nil {
		return 0
	}
	return c.conn.Written()
}

// checkStall runs slowGrace after the client went over its byte budget, and
// every slowGrace while it stays there. A client whose socket took nothing
// in that time is not draining, so it is closed with 1008; one that is
// draining keeps going (the hard cap still bounds it).
func (c *client) checkStall() {
	c.mu.Lock()
	if c.closed || !c.feed.over() {
		c.stallTimer = nil
		c.mu.Unlock()
		return
	}
	if w := c.written(); w != c.stallMark {
		c.stallMark = w
		c.stallTimer.Reset(c.lim.slowGrace)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.cutSlow()
}

// cutSlow closes a client that cannot take the channel's messages.
func (c *client) cutSlow() {
	if c.close(websocket.StatusPolicyViolation, reasonSlowConsumer, disconnectSlowConsumer) {
		c.m.SlowConsumers.Inc(metrics.SlowClient)
	}
}

// startWriterLocked starts the writer goroutine unless one runs or there is
// no connection yet (serve starts it then). c.mu must be held, which orders
// wg.Add before serve's wg.Wait: once closed, only close itself starts one.
func (c *client) startWriterLocked() bool {
	if c.writing || c.conn == nil {
		return false
	}
	c.writing = true
	c.wg.Add(1)
	go c.writeLoop()
	return true
}

// attach gives the client its upgraded connection, pinged by pinger (nil:
// no pings). Messages queued since the subscription was confirmed are sent
// first.
func (c *client) attach(conn *wsframe.Conn, pinger *wsframe.Pinger) {
	c.mu.Lock()
	c.conn, c.pinger = conn, pinger
	if c.closed && c.forceClose == nil {
		c.forceClose = time.AfterFunc(c.lim.closeGrace, c.cut)
	}
	c.mu.Unlock()
}

// close starts closing the client with a WebSocket close code and text, and
// records reason (a Disconnects label). It never blocks, so the broadcast
// path may call it. The writer sends the close frame; if the handshake has
// not finished within closeGrace (a slow consumer's TCP window may be full,
// so the frame may never get out) the TCP connection is cut. Only the first
// call counts; it reports whether this call was it.
func (c *client) close(code websocket.StatusCode, text string, reason metrics.FanoutDisconnect) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.closed = true
	c.closeCode, c.closeText, c.reason = code, text, reason
	// Messages queued before a shutdown or a NATS loss are good and in
	// order: the writer sends them before the close frame (bounded by
	// closeGrace like the close itself). Any other close means the client
	// is not taking data, so they are dropped.
	c.flushOnClose = reason == disconnectShutdown || reason == disconnectNATSLost
	if !c.flushOnClose {
		c.feed.drop()
	}
	// The close grace bounds the close handshake. Queued messages still
	// to be sent first are bounded by the write timeout per write (and the
	// shutdown deadline): a client that is taking them should not be cut
	// a second into a large flush, so their writer starts the clock.
	if c.conn != nil && !(c.flushOnClose && c.feed.queued() > 0) {
		c.forceClose = time.AfterFunc(c.lim.closeGrace, c.cut)
	}
	// The writer sends the close frame: make sure one runs.
	c.startWriterLocked()
	c.mu.Unlock()
	close(c.closing)
	c.m.Disconnects.Inc(reason)
	return true
}

// cut ends a client whose close handshake has not finished within
// closeGrace: its TCP connection is closed, after its close frame if that
// has not gone out yet (see wsframe.Conn.Cut).
func (c *client) cut() {
	c.mu.Lock()
	conn, code, text := c.conn, c.closeCode, c.closeText
	c.mu.Unlock()
	if conn.Cut(uint16(code), text, closeFlushTimeout) {
		c.log.Debug("close handshake not started within the close grace; close frame sent at the cut")
	}
}

// expireAt closes the client with 4401 "token expired" at t: the token it
// was let in with is no longer valid from then on.
func (c *client) expireAt(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.expiry = time.AfterFunc(time.Until(t), func() {
		if c.close(StatusUnauthorized, reasonTokenExpired, disconnectTokenExpired) {
			c.m.AuthRefused.Inc(metrics.AuthExpired)
			c.log.Info("client closed: token expired")
		}
	})
}

// serve runs the connection until it is closed and everything it started
// has stopped. The calling goroutine is the reader: the only goroutine an
// idle client has.
func (c *client) serve() {
	c.mu.Lock()
	if c.closed || c.feed.queued() > 0 {
		c.startWriterLocked()
	}
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		c.pinger.Add(c.conn)
	}
	c.readLoop()
	c.finish()
}

// finish waits for the writer and stops what the client started, once its
// reader is done.
//
//go:noinline
func (c *client) finish() {
	c.wg.Wait()
	c.mu.Lock()
	if c.forceClose != nil {
		c.forceClose.Stop()
	}
	if c.stallTimer != nil {
		c.stallTimer.Stop()
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.mu.Unlock()
	c.conn.Close()
}

// readLoop reads the client's frames until the connection is closed, by the
// client (its close frame is answered by the reader) or by the server (the
// reader sees the client's answer, or the cut). A close the reader itself
// starts (a protocol error, a refused message, an unanswered ping) is
// recorded, and the reader waits for the client's close frame.
func (c *client) readLoop() {
	send, err := c.conn.ReadLoop(c.dataLimit, c.onData)
	c.readEnded(send, err)
}

// readEnded closes the client for why its reader stopped.
//
//go:noinline
func (c *client) readEnded(send *wsframe.CloseError, err error) {
	c.pinger.Remove(c.conn)
	switch {
	case send != nil && errors.Is(err, wsframe.ErrProtocol):
		// RFC 6455: a frame that breaks the protocol (unmasked, reserved
		// bits, unknown opcode, bad control frame) ends with 1002.
		c.close(websocket.StatusCode(send.Code), send.Reason, disconnectProtocolError)
	case send != nil && errors.Is(err, wsframe.ErrTooBig) && c.talk != nil:
		c.talk.tooLarge(c) // 1009 with the maximum, counted (control.go)
	case send != nil:
		c.close(websocket.StatusCode(send.Code), send.Reason, disconnectClientData)
	case errors.Is(err, wsframe.ErrPingTimeout):
		c.close(websocket.StatusPolicyViolation, reasonPingTimeout, disconnectPingTimeout)
	default:
		// The client closed (its close frame is answered), or the
		// connection ended.
		c.close(websocket.StatusNormalClosure, "", disconnectClientClosed)
		return
	}
	c.conn.AwaitClose(time.Now().Add(c.lim.closeGrace))
}

// onData is where a client's data message arrives: the one hook for clients
// that talk back. It returns nil to go on reading, or the close code and
// reason that end the connection. With dataLimit 0 (receive-only, every
// watcher today) it is called at the message's first frame header with p
// nil, the payload never read; with dataLimit > 0 p is the whole message,
// unmasked, valid only during the call.
func (c *client) onData(op byte, p []byte) *wsframe.CloseError {
	if c.talk != nil {
		return c.talk.dataFrame(c, op, p) // a control channel: talking back (control.go)
	}
	return &wsframe.CloseError{Code: uint16(websocket.StatusUnsupportedData), Reason: reasonClientData}
}

// writeLoop is the client's only writer of data frames. It runs while
// there is something to write, lingers writerLinger for more, and ends; the
// one that sees the client closed sends the close frame.
func (c *client) writeLoop() {
	defer c.wg.Done()
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		select {
		case <-c.closing:
			c.mu.Lock()
			code, text, flush := c.closeCode, c.closeText, c.flushOnClose
			c.mu.Unlock()
			// The flush is bounded by the write timeout per write; the
			// handshake by forceClose, which cuts after closeGrace.
			if flush {
				_ = c.flush(true)
			}
			c.mu.Lock()
			if c.forceClose == nil {
				c.forceClose = time.AfterFunc(c.lim.closeGrace, c.cut)
			}
			c.mu.Unlock()
			// The reader waits for the client's close frame (or the cut).
			_ = c.conn.WriteClose(uint16(code), text)
			return // writing stays set: no writer is needed after this one
		default:
		}
		// Yield once before taking the batch. With a thousand writers
		// runnable on a few cores, the goroutines that bring the next
		// messages (ingest, NATS, the hub) otherwise wait behind all of
		// them and each writer sends a few messages per syscall; after one
		// round of the run queue it finds the burst and sends it with one.
		// When nothing else is runnable this returns at once.
		runtime.Gosched()
		if err := c.flush(false); err != nil {
			if c.close(websocket.StatusInternalError, reasonWriteFailed, disconnectWriteError) {
				c.log.Debug("write failed", "err", err)
			}
			continue
		}
		linger.Reset(writerLinger)
		select {
		case <-c.closing:
		case <-c.wake:
		case <-linger.C:
			c.mu.Lock()
			if c.feed.queued() == 0 && !c.closed {
				c.writing = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
		}
	}
}

// flush writes everything queued as one batch: wsframe.WriteFrames sends
// each message's frame (header encoded once per message, by the hub) with one
// write syscall per 64 KiB. Once the client is closed only the final flush before
// the close frame writes.
func (c *client) flush(final bool) error {
	c.mu.Lock()
	if (c.closed && !final) || c.feed.queued() == 0 {
		c.mu.Unlock()
		return nil
	}
	batch := c.feed.take()
	c.mu.Unlock()

	n, err := wsframe.WriteFrames(c.conn, batch)
	bytes := 0
	for _, msg := range batch[:n] {
		bytes += len(msg.data)
	}

	c.mu.Lock()
	c.feed.done(batch)
	c.drainedLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.delivered += n
	c.bytesOut += bytes
	c.m.Deliveries.Add(float64(n))
	c.m.BytesOut.Add(float64(bytes))
	return nil
}

// stats returns the close reason and what was delivered; valid after serve.
func (c *client) stats() (reason metrics.FanoutDisconnect, delivered, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason, c.delivered, c.bytesOut
}

// closeFlushTimeout bounds the close frame a cut sends, and how long a cut
// waits for a writer holding the connection.
const closeFlushTimeout = 100 * time.Millisecond

// Frame is the message's WebSocket frame (wsframe.Framer): the header the
// hub encoded once, and the payload, the same for every client. A message
// not built by newMessage gets its header encoded on the spot.
func (m *message) Frame() (hdr, payload []byte) {
	if m.hdrLen > 0 {
		return m.hdr[:m.hdrLen], m.data
	}
	e := newMessage(m.typ, m.data)
	return e.hdr[:e.hdrLen], m.data
}
