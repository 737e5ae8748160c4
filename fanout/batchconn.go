package fanout

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaydev/relay/shared/wsframe"
)

// maxBatch bounds the bytes writeFrames gathers for one write syscall: large
// enough that a burst of small messages goes out in one write, small enough
// that the pooled buffers stay cheap.
const maxBatch = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// batchConn is the hijacked TCP connection under a WebSocket. The client's
// writer sends data frames through writeFrames, which frames a whole batch
// of queued messages and writes it with one syscall per maxBatch bytes
// (the library would cost a flush, so a syscall, per frame). The library
// writes only its control frames (pong, ping, close) through Write. Every
// network write has a deadline, so none can block past the write timeout.
type batchConn struct {
	net.Conn
	timeout time.Duration

	mu     sync.Mutex
	err    error // sticky: after a failed write every write fails at once
	writes int   // network writes, for tests and benchmarks
	// written counts bytes the socket has taken: the client's measure of
	// whether it is draining.
	written atomic.Uint64

	// The library's own writes (pings, pongs, close frames) are scanned
	// for frame boundaries: once its close frame has gone out, writeFrames
	// sends no more data frames (RFC 6455 5.5.1), as the library's Write
	// would refuse them.
	libHdr    [wsframe.MaxHeaderLen]byte
	libHdrLen int
	libRest   uint64 // payload bytes of the library's current frame still to come
	closeSent bool
}

func newBatchConn(c net.Conn, timeout time.Duration) *batchConn {
	return &batchConn{Conn: c, timeout: timeout}
}

// Write is called by the WebSocket library, one flush (of its control
// frames) at a time.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	b.scanLibrary(p)
	if err := b.writeLocked(p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// scanLibrary follows the frames in the library's byte stream (a frame
// header may be split across writes) and notes its close frame.
func (b *batchConn) scanLibrary(p []byte) {
	for len(p) > 0 {
		if b.libRest > 0 {
			k := uint64(len(p))
			if k > b.libRest {
				k = b.libRest
			}
			b.libRest -= k
			p = p[k:]
			continue
		}
		b.libHdr[b.libHdrLen] = p[0]
		b.libHdrLen++
		p = p[1:]
		h, _, ok := wsframe.ParseHeader(b.libHdr[:b.libHdrLen])
		if !ok {
			continue
		}
		if h.Op == wsframe.OpClose {
			b.closeSent = true
		}
		b.libRest, b.libHdrLen = h.Len, 0
	}
}

// writeFrames sends each message of batch as one WebSocket frame (header
// encoded once per message by the hub), all of it with one write syscall
// per maxBatch bytes, and reports how many messages went out whole. The
// library is bypassed because its Write costs a lock handshake, a header
// encoding and a flush per message per client, which at a thousand clients
// is most of the fan-out's CPU. It holds the lock for the whole batch, so
// the library's control frames go out between batches, never inside a frame.
func (b *batchConn) writeFrames(batch []*message) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.closeSent {
		return 0, net.ErrClosed
	}
	bp := batchPool.Get().(*[]byte)
	defer func() {
		*bp = (*bp)[:0]
		batchPool.Put(bp)
	}()
	buf := (*bp)[:0]
	sent, held := 0, 0 // messages written, messages in buf
	for _, m := range batch {
		if len(buf)+int(m.hdrLen)+len(m.data) <= maxBatch-len(m.hdr) {
			buf = m.appendHeader(buf)
			buf = append(buf, m.data...)
			held++
			continue
		}
		// Full: what is held, this header and its payload go out together
		// (writev), the payload not copied.
		buf = m.appendHeader(buf)
		if err := b.writeLocked(buf, m.data); err != nil {
			return sent, err
		}
		sent += held + 1
		buf, held = buf[:0], 0
	}
	if len(buf) > 0 {
		if err := b.writeLocked(buf, nil); err != nil {
			return sent, err
		}
		sent += held
	}
	*bp = buf
	return sent, nil
}

// appendHeader appends m's frame header to buf, encoding it on the spot
// for a message not built by newMessage.
func (m *message) appendHeader(buf []byte) []byte {
	if m.hdrLen > 0 {
		return append(buf, m.hdr[:m.hdrLen]...)
	}
	e := newMessage(m.typ, m.data)
	return append(buf, e.hdr[:e.hdrLen]...)
}

// writeLocked writes p then q (q may be nil) under the write deadline.
func (b *batchConn) writeLocked(p, q []byte) error {
	if b.err != nil {
		return b.err
	}
	if err := b.Conn.SetWriteDeadline(time.Now().Add(b.timeout)); err != nil {
		b.err = err
		return err
	}
	b.writes++
	var err error
	var n int64
	if q == nil {
		var k int
		k, err = b.Conn.Write(p)
		n = int64(k)
	} else {
		bufs := net.Buffers{p, q}
		n, err = bufs.WriteTo(b.Conn)
	}
	b.written.Add(uint64(n))
	if err != nil {
		b.err = err
	}
	return err
}

// closeFlushTimeout bounds the close frame a cut sends, and how long a cut
// waits for a writer holding the connection.
const closeFlushTimeout = 100 * time.Millisecond

// Close closes the TCP connection promptly; a blocked Write returns. It never
// waits for the lock, so it works while a write is stuck on a full window.
func (b *batchConn) Close() error {
	if b.mu.TryLock() {
		if b.err == nil {
			b.err = net.ErrClosed
		}
		b.mu.Unlock()
	}
	return b.Conn.Close()
}

// cut closes the TCP connection like Close, but first sends a close frame
// with code and reason if none has gone out and nothing holds the
// connection: the client's writer may not have been scheduled yet (ten
// thousand clients closed together on a busy machine), and a client cut
// without a close frame sees 1006 and cannot tell a shutdown from a crash.
// A writer blocked on a full window holds the lock, and then no frame could
// get through anyway; but the lock may also be held by a writer about to
// send the library's own close frame (descheduled on a busy machine), so cut
// waits up to wait for it before cutting regardless.
//
// It reports whether it sent the frame.
func (b *batchConn) cut(code uint16, reason string, wait time.Duration) (sent bool) {
	if b.lockWithin(wait) {
		if !b.closeSent && b.err == nil && b.libRest == 0 && b.libHdrLen == 0 {
			frame, _ := wsframe.AppendClose(nil, code, reason, nil) // reasons are at most 123 bytes
			if b.Conn.SetWriteDeadline(time.Now().Add(min(b.timeout, closeFlushTimeout))) == nil {
				b.writes++
				_, err := b.Conn.Write(frame)
				sent = err == nil
			}
			b.closeSent = true
		}
		if b.err == nil {
			b.err = net.ErrClosed // nothing more after the close frame
		}
		b.mu.Unlock()
	}
	_ = b.Close()
	return sent
}

// lockWithin takes b.mu if it is free within d.
func (b *batchConn) lockWithin(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !b.mu.TryLock() {
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// networkWrites reports how many write syscalls (or writev) were made.
func (b *batchConn) networkWrites() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes
}

// hijackWriter hands coder/websocket a batchConn instead of the raw
// connection when Accept hijacks it, and keeps it for the client.
type hijackWriter struct {
	http.ResponseWriter
	timeout time.Duration
	bc      *batchConn
}

var errHijacked = errors.New("fanout: connection already hijacked")

func (h *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h.bc != nil {
		return nil, nil, errHijacked
	}
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http has already written the 101 response; whatever it still holds
	// goes out before the writer is pointed at the batchConn.
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	// The header read deadline set by http.Server must not end a WebSocket
	// that lives for hours; writes get their deadline per write.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if wc, ok := conn.(*watchedConn); ok {
		conn = wc.Conn // the header watch is done; keep writev on the raw socket
	}
	h.bc = newBatchConn(conn, h.timeout)
	// The library writes only control frames itself (data frames go
	// through batchConn.writeFrames) and reads only control frames (a data
	// frame is refused from its header), so small buffers do; net/http's
	// 4 KiB pair would be most of an idle connection's memory. A client
	// that pipelined bytes behind its upgrade request keeps the reader
	// holding them.
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(h.bc, libBufSize)
	}
	return h.bc, bufio.NewReadWriter(br, bufio.NewWriterSize(h.bc, libBufSize)), nil
}

// libBufSize is the size of the library's read and write buffers: a
// control frame is at most 2+4+125 bytes.
const libBufSize = 256

// Unwrap lets http.ResponseController reach the real writer.
func (h *hijackWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }
