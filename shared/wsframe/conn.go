package wsframe

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is the server end of a WebSocket after Accept. It owns the TCP (or
// TLS) connection: every byte relay sends on it goes through its write
// lock, under a deadline, and the one goroutine that runs ReadLoop parses
// every byte the client sends.
//
// It keeps no buffers between frames: an idle connection is this struct, the
// socket, and the goroutine blocked in ReadLoop.
type Conn struct {
	nc          net.Conn
	subprotocol string
	timeout     time.Duration // bound for each write
	// pending: bytes the client sent behind its upgrade request, read
	// before the socket. Reader only.
	pending []byte
	hdr     [MaxHeaderLen]byte // the frame header being read; reader only
	broken  bool               // reader only: a frame broke the protocol, nothing after it can be parsed
	left    uint64             // reader only: payload bytes of the last frame ReadLoop left unread

	mu        sync.Mutex
	err       error // sticky: after a failed write every write fails at once
	closeSent atomic.Bool
	// written counts bytes the socket has taken: the owner's measure of
	// whether the client is draining.
	written atomic.Uint64

	// Pings (see Pinger). pingAt is when the unanswered one was sent (unix
	// ns, 0 when none); pingLate means it went unanswered past the timeout.
	pingLate atomic.Bool
	pingAt   atomic.Int64
	wheel    *Pinger // guarded by wheel.mu
	slot     int32
	idx      int32
}

// newConn takes over nc, already upgraded; writes time out after timeout
// (0: 10s).
func newConn(nc net.Conn, timeout time.Duration) *Conn {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Conn{nc: nc, timeout: timeout}
}

// Subprotocol is the subprotocol Accept selected ("" for none).
func (c *Conn) Subprotocol() string { return c.subprotocol }

// RemoteAddr is the client's address as the socket sees it.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Written is how many bytes the socket has taken.
func (c *Conn) Written() uint64 { return c.written.Load() }

// CloseSent reports whether a close frame has gone out (or was attempted).
func (c *Conn) CloseSent() bool { return c.closeSent.Load() }

// maxBatch bounds the bytes WriteFrames gathers for one write syscall: large
// enough that a burst of small messages goes out in one write, small enough
// that the pooled buffers stay cheap.
const maxBatch = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// Framer is a server data frame prepared once and sent to any number of
// connections: a server's frames are unmasked, so the whole frame is the
// same for every client. Frame returns its header and payload.
type Framer interface {
	Frame() (hdr, payload []byte)
}

// WriteFrames sends each of batch as one frame, all of it with one write
// syscall per 64 KiB (a payload that does not fit goes out with what is held
// by one writev, uncopied), and reports how many went out whole. It holds
// the write lock for the whole batch, so control frames go out between
// batches, never inside a frame. After a close frame it sends nothing
// (RFC 6455 5.5.1) and returns net.ErrClosed.
func WriteFrames[F Framer](c *Conn, batch []F) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.closeSent.Load() {
		return 0, net.ErrClosed
	}
	bp := batchPool.Get().(*[]byte)
	defer func() {
		*bp = (*bp)[:0]
		batchPool.Put(bp)
	}()
	buf := (*bp)[:0]
	sent, held := 0, 0 // frames written, frames in buf
	for _, f := range batch {
		hdr, p := f.Frame()
		if len(buf)+len(hdr)+len(p) <= maxBatch-MaxHeaderLen {
			buf = append(buf, hdr...)
			buf = append(buf, p...)
			held++
			continue
		}
		buf = append(buf, hdr...)
		if err := c.writeLocked(buf, p); err != nil {
			return sent, err
		}
		sent += held + 1
		buf, held = buf[:0], 0
	}
	if len(buf) > 0 {
		if err := c.writeLocked(buf, nil); err != nil {
			return sent, err
		}
		sent += held
	}
	*bp = buf
	return sent, nil
}

// writeLocked writes p then q (q may be nil) under the write deadline; c.mu
// held.
func (c *Conn) writeLocked(p, q []byte) error {
	return c.writeLockedWithin(p, q, c.timeout)
}

func (c *Conn) writeLockedWithin(p, q []byte, timeout time.Duration) error {
	if c.err != nil {
		return c.err
	}
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		c.err = err
		return err
	}
	var err error
	var n int64
	if q == nil {
		var k int
		k, err = c.nc.Write(p)
		n = int64(k)
	} else {
		bufs := net.Buffers{p, q}
		n, err = bufs.WriteTo(c.nc)
	}
	c.written.Add(uint64(n))
	if err != nil {
		c.err = err
	}
	return err
}

// writeControl sends one control frame (payload at most 125 bytes), unless
// a close frame has gone out.
func (c *Conn) writeControl(op byte, p []byte) error {
	var b [2 + MaxControlPayload]byte
	frame, err := AppendControl(b[:0], op, p, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent.Load() {
		return net.ErrClosed
	}
	return c.writeLocked(frame, nil)
}

// WriteClose sends the close frame with code and reason (at most 123 bytes),
// unless one has gone out already; nothing is sent after it. The TCP
// connection stays open for the client's close frame, which ReadLoop (or
// AwaitClose) reads.
func (c *Conn) WriteClose(code uint16, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeCloseLocked(code, reason, c.timeout)
}

func (c *Conn) writeCloseLocked(code uint16, reason string, timeout time.Duration) error {
	if c.closeSent.Swap(true) {
		return nil
	}
	var b [2 + MaxControlPayload]byte
	frame, err := AppendClose(b[:0], code, reason, nil)
	if err != nil {
		frame, _ = AppendClose(b[:0], code, "", nil)
	}
	return c.writeLockedWithin(frame, nil, timeout)
}

// closeFlushTimeout bounds the close frame a cut sends.
const closeFlushTimeout = 100 * time.Millisecond

// Close closes the TCP connection promptly: a blocked write or read
// returns. It never waits for the write lock, so it works while a write is
// stuck on a full window.
func (c *Conn) Close() error {
	if c.mu.TryLock() {
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.mu.Unlock()
	}
	return c.nc.Close()
}

// Cut closes the TCP connection like Close, but first sends a close frame
// with code and reason if none has gone out and nothing holds the
// connection: its owner's writer may not have been scheduled yet (ten
// thousand clients closed together on a busy machine), and a client cut
// without a close frame sees 1006 and cannot tell a shutdown from a crash. A
// writer blocked on a full window holds the lock, and then no frame could
// get through anyway; but the lock may also be held by a writer about to
// send its close frame (descheduled on a busy machine), so Cut waits up to
// wait for it before cutting regardless.
//
// It reports whether it sent the frame.
func (c *Conn) Cut(code uint16, reason string, wait time.Duration) (sent bool) {
	if c.lockWithin(wait) {
		if !c.closeSent.Load() && c.err == nil {
			sent = c.writeCloseLocked(code, reason, min(c.timeout, closeFlushTimeout)) == nil
		}
		c.closeSent.Store(true)
		if c.err == nil {
			c.err = net.ErrClosed // nothing more after the close frame
		}
		c.mu.Unlock()
	}
	_ = c.Close()
	return sent
}

// lockWithin takes c.mu if it is free within d.
func (c *Conn) lockWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !c.mu.TryLock() {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
