package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/relaydev/relay/shared/tcpproto"
)

// chanState is one bench channel: what its senders wrote and who receives it.
type chanState struct {
	name string
	sent atomic.Uint64 // messages written by its senders (counted before the flush)
	fast []*receiver   // receivers that read (the slow ones are not waited for)
}

// minReceived is the count of the channel's slowest live reading receiver,
// and false when it has none.
func (c *chanState) minReceived() (uint64, bool) {
	var m uint64
	ok := false
	for _, r := range c.fast {
		if r.dead.Load() {
			continue
		}
		n := r.recv.Load()
		if !ok || n < m {
			m, ok = n, true
		}
	}
	return m, ok
}

// receiver is one receiving connection (WebSocket, or plain TCP for the
// ceiling).
type receiver struct {
	id   int
	ch   *chanState
	slow bool // connected, never reads

	recv atomic.Uint64
	dead atomic.Bool
	bad  atomic.Uint64 // messages without a readable timestamp

	ws  *wsConn
	tcp net.Conn
	br  *bufio.Reader

	end error // how the connection ended (after run returns)
	_   [32]byte
}

// window is the measurement window in clock nanoseconds: latencies are
// recorded for messages stamped inside it.
type window struct {
	from, to atomic.Int64
}

func (r *receiver) run(clk clock, w *window, lat *latencies) {
	buf := make([]int64, 0, 256)
	onMessage := func(p []byte, at int64) {
		r.recv.Add(1)
		t, err := readStamp(p)
		if err != nil {
			r.bad.Add(1)
			return
		}
		if t >= w.from.Load() && t < w.to.Load() {
			buf = append(buf, at-t)
			if len(buf) == cap(buf) {
				lat.record(r.id, buf)
				buf = buf[:0]
			}
		}
	}
	if r.ws != nil {
		r.end = r.ws.readLoop(clk.now, onMessage)
	} else {
		r.end = readLines(r.br, clk.now, onMessage)
	}
	if len(buf) > 0 {
		lat.record(r.id, buf)
	}
	r.dead.Store(true)
}

// readLines is the plain-TCP receiver of the ceiling: one message per line.
func readLines(br *bufio.Reader, now func() int64, onMessage func(p []byte, at int64)) error {
	var at int64
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				return err
			}
			at = now()
		}
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("loadgen: line longer than %d bytes", br.Size())
			}
			return err
		}
		onMessage(line[:len(line)-1], at)
	}
}

// closeCode is the WebSocket close code the server ended r with, or 0.
func (r *receiver) closeCode() int {
	var ce CloseError
	if errors.As(r.end, &ce) {
		return ce.Code
	}
	return 0
}

// drainSlow reads what a slow receiver has been sent, to learn how the
// server ended it, for at most d.
func (r *receiver) drainSlow(clk clock, d time.Duration) {
	if r.ws == nil {
		r.tcp.SetReadDeadline(time.Now().Add(d))
		_, r.end = io.Copy(io.Discard, r.tcp)
		return
	}
	r.ws.conn.SetReadDeadline(time.Now().Add(d))
	r.end = r.ws.readLoop(clk.now, func([]byte, int64) {})
}

func (r *receiver) close() {
	if r.ws != nil {
		r.ws.Close()
	} else if r.tcp != nil {
		r.tcp.Close()
	}
}

// sender is one TCP sender connection, after the handshake.
type sender struct {
	id   int
	ch   *chanState
	conn net.Conn
	sent atomic.Uint64
	err  error
}

// dialSender connects to a handshake listener (ingest's */line, or the
// ceiling's) and names the channel.
func dialSender(addr, channel, token string, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := tcpproto.Handshake{Channel: channel, Token: token}.Line()
	if err == nil {
		_, err = conn.Write(line)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	// Read exactly the +OK line: the connection is write-only from here on.
	reply := make([]byte, len(tcpproto.OKLine))
	if _, err := io.ReadFull(conn, reply); err != nil {
		conn.Close()
		return nil, fmt.Errorf("loadgen: handshake with %s: %w", addr, err)
	}
	if string(reply) != string(tcpproto.OKLine) {
		rest, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		return nil, fmt.Errorf("loadgen: handshake with %s: %s", addr, strings.TrimSpace(string(reply)+rest))
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// pace is how a sender decides when to write.
type pace struct {
	interval int64 // ns between messages of one sender; 0 = flat out
	window   int   // flat out: most messages in flight per channel
}

// run writes messages until stop is set. Flat out, it keeps at most
// window messages between what the channel's senders wrote and what its
// slowest reading receiver has read: a closed loop that finds the highest
// rate the path sustains without overrunning any queue.
func (s *sender) run(clk clock, size int, p pace, stop *atomic.Bool, phase int64) {
	line := append(newPayload(size), '\n')
	bw := bufio.NewWriterSize(s.conn, 64<<10)
	write := func(now int64) bool {
		stamp(line, now)
		if _, err := bw.Write(line); err != nil {
			s.err = err
			return false
		}
		s.sent.Add(1)
		s.ch.sent.Add(1)
		return true
	}
	defer func() {
		if err := bw.Flush(); err != nil && s.err == nil {
			s.err = err
		}
	}()
	if p.interval == 0 {
		// low caches the slowest receiver's count: it is only read again
		// when the window looks full.
		var low uint64
		for k := 0; ; k++ {
			if k&15 == 0 && stop.Load() {
				return
			}
			for p.window > 0 && s.ch.sent.Load()-low >= uint64(p.window) {
				n, ok := s.ch.minReceived()
				if !ok {
					break
				}
				low = n
				if s.ch.sent.Load()-low < uint64(p.window) {
					break
				}
				if err := bw.Flush(); err != nil {
					s.err = err
					return
				}
				if stop.Load() {
					return
				}
				time.Sleep(20 * time.Microsecond)
			}
			if !write(clk.now()) {
				return
			}
		}
	}
	next := clk.now() + phase
	for !stop.Load() {
		now := clk.now()
		if now < next {
			if err := bw.Flush(); err != nil {
				s.err = err
				return
			}
			time.Sleep(time.Duration(next - now))
			continue
		}
		// Catch up on everything due, in one flush.
		for n := 0; next <= now && n < 4096; n++ {
			if !write(now) {
				return
			}
			next += p.interval
		}
	}
}
