package wsframe

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// peer is the client end of an accepted Conn, speaking raw frames.
type peer struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// acceptPair upgrades a real loopback connection with Accept, the client
// sending extra (raw bytes) right behind its request, and returns the
// server Conn and the client end.
func acceptPair(t *testing.T, o *AcceptOptions, header string, extra []byte) (*Conn, *peer, *http.Response) {
	t.Helper()
	acc := make(chan *Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, o)
		if err != nil {
			t.Error(err)
			close(acc)
			return
		}
		acc <- c
	}))
	t.Cleanup(hs.Close)
	nc, err := net.DialTimeout("tcp", hs.Listener.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /ws/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + header + "\r\n"
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(append([]byte(req), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := <-acc
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	return c, &peer{t: t, nc: nc, br: br}, resp
}

// send writes one masked client frame.
func (p *peer) send(b0 byte, payload []byte) {
	p.t.Helper()
	key := [4]byte{7, 1, 8, 2}
	b := append([]byte{b0}, AppendHeader(nil, 0, len(payload), &key)[1:]...)
	m := append([]byte(nil), payload...)
	Mask(m, key)
	if _, err := p.nc.Write(append(b, m...)); err != nil {
		p.t.Fatal(err)
	}
}

// next reads one server frame.
func (p *peer) next() (Header, []byte) {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [MaxHeaderLen]byte
	if _, err := io.ReadFull(p.br, hdr[:2]); err != nil {
		p.t.Fatal(err)
	}
	n := HeaderLen(hdr[0], hdr[1])
	if _, err := io.ReadFull(p.br, hdr[2:n]); err != nil {
		p.t.Fatal(err)
	}
	h, _, _ := ParseHeader(hdr[:n])
	if h.Masked {
		p.t.Fatal("server frame masked")
	}
	b := make([]byte, h.Len)
	if _, err := io.ReadFull(p.br, b); err != nil {
		p.t.Fatal(err)
	}
	return h, b
}

// expectClose reads frames until a close frame and checks its code.
func (p *peer) expectClose(code uint16) string {
	p.t.Helper()
	for {
		h, b := p.next()
		if h.Op == OpClose {
			if got := CloseCode(b); got != int(code) {
				p.t.Fatalf("close %d %q, want %d", got, b[min(2, len(b)):], code)
			}
			return string(b[2:])
		}
	}
}

// frames is a prepared server frame, as fanout's messages are.
type frame struct{ hdr, p []byte }

func (f frame) Frame() ([]byte, []byte) { return f.hdr, f.p }

func newFrame(op byte, p []byte) frame { return frame{AppendHeader(nil, op, len(p), nil), p} }

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestWriteFramesBatches: a burst of small frames goes out in one write, and
// a batch over 64 KiB in a few, every frame intact and in order.
func TestWriteFramesBatches(t *testing.T) {
	t.Parallel()
	s, cl := tcpPair(t)
	cc := &countConn{Conn: s}
	c := newConn(cc, 10*time.Second)
	var batch []frame
	for i := range 100 {
		batch = append(batch, newFrame(OpText, bytes.Repeat([]byte{byte('a' + i%26)}, 100)))
	}
	if n, err := WriteFrames(c, batch); n != 100 || err != nil {
		t.Fatalf("WriteFrames: %d, %v", n, err)
	}
	if w := cc.writes.Load(); w != 1 {
		t.Errorf("%d writes for 100 frames of 100 bytes, want 1", w)
	}
	big := []frame{newFrame(OpBinary, make([]byte, 100)), newFrame(OpBinary, make([]byte, 200000)), newFrame(OpText, []byte("end"))}
	go func() {
		if n, err := WriteFrames(c, big); n != 3 || err != nil {
			t.Errorf("WriteFrames: %d, %v", n, err)
		}
	}()
	p := &peer{t: t, nc: cl, br: bufio.NewReader(cl)}
	for i := range 100 {
		if h, b := p.next(); h.Op != OpText || !bytes.Equal(b, batch[i].p) {
			t.Fatalf("frame %d: op %d, %d bytes", i, h.Op, len(b))
		}
	}
	for i, f := range big {
		if _, b := p.next(); !bytes.Equal(b, f.p) {
			t.Fatalf("big batch frame %d: %d bytes, want %d", i, len(b), len(f.p))
		}
	}
}

// A cut sends the close frame when none has gone out, then closes; after a
// close frame it sends nothing more.
func TestCutSendsCloseFrame(t *testing.T) {
	t.Parallel()
	s, cl := tcpPair(t)
	c := newConn(s, 10*time.Second)
	if !c.Cut(1001, "bye", 0) {
		t.Error("cut reported no close frame sent")
	}
	cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(cl)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := AppendClose(nil, 1001, "bye", nil); !bytes.Equal(got, want) {
		t.Errorf("peer got %q, want a 1001 close frame", got)
	}

	s, cl = tcpPair(t)
	c = newConn(s, 10*time.Second)
	if err := c.WriteClose(1000, ""); err != nil {
		t.Fatal(err)
	}
	if c.Cut(1001, "bye", 0) {
		t.Error("cut sent a second close frame")
	}
	cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	want, _ := AppendClose(nil, 1000, "", nil)
	if got, err := io.ReadAll(cl); err != nil || !bytes.Equal(got, want) {
		t.Errorf("peer got %q, %v; want only the first close frame", got, err)
	}
}

func TestWriteDeadline(t *testing.T) {
	t.Parallel()
	s, _ := tcpPair(t) // the peer never reads
	c := newConn(s, 200*time.Millisecond)
	big := []frame{newFrame(OpBinary, make([]byte, 1<<20))}
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = WriteFrames(c, big)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if _, err2 := WriteFrames(c, []frame{newFrame(OpText, []byte("x"))}); err2 == nil {
		t.Error("a write after a failed one succeeded")
	}
}

// TestAccept: the handshake's answer, the subprotocol as the client spelled
// it, and frames the client sent behind its request are read first.
func TestAccept(t *testing.T) {
	t.Parallel()
	ping := func() []byte {
		key := [4]byte{1, 2, 3, 4}
		b, _ := AppendControl(nil, OpPing, []byte("early"), &key)
		return b
	}()
	c, p, resp := acceptPair(t, &AcceptOptions{Subprotocols: []string{"relay.v1"}},
		"Sec-WebSocket-Protocol: relay.bearer.x, Relay.V1\r\n", ping)
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" ||
		resp.Header.Get("Sec-WebSocket-Protocol") != "Relay.V1" || c.Subprotocol() != "Relay.V1" {
		t.Fatalf("response %d %v, subprotocol %q", resp.StatusCode, resp.Header, c.Subprotocol())
	}
	go c.ReadLoop(0, nil)
	if h, b := p.next(); h.Op != OpPong || string(b) != "early" {
		t.Fatalf("got op %d %q, want the pong to the pipelined ping", h.Op, b)
	}
}

// TestAcceptRefusals: what is not a handshake gets coder/websocket's statuses.
func TestAcceptRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		edit   func(r *http.Request)
		status int
	}{
		{"plain GET", func(r *http.Request) { r.Header.Del("Connection"); r.Header.Del("Upgrade") }, 426},
		{"no websocket upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "h2c") }, 426},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, 405},
		{"version 8", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, 400},
		{"short key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, 400},
		{"two keys", func(r *http.Request) { r.Header.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==") }, 400},
	} {
		r := httptest.NewRequest(http.MethodGet, "/ws/x", nil)
		r.Header.Set("Connection", "keep-alive, Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		tc.edit(r)
		rec := httptest.NewRecorder()
		if _, err := Accept(rec, r, nil); !errors.Is(err, ErrHandshake) || rec.Code != tc.status {
			t.Errorf("%s: %d, %v; want %d", tc.name, rec.Code, err, tc.status)
		}
	}
}

// TestReadLoop: control frames answered, data handed over whole, and every
// protocol violation closed with its code.
func TestReadLoop(t *testing.T) {
	t.Parallel()
	type result struct {
		send *CloseError
		err  error
	}
	run := func(limit int, onData DataFunc) (*Conn, *peer, chan result) {
		c, p, _ := acceptPair(t, nil, "", nil)
		done := make(chan result, 1)
		go func() { s, err := c.ReadLoop(limit, onData); done <- result{s, err} }()
		return c, p, done
	}
	wait := func(done chan result) result {
		t.Helper()
		select {
		case r := <-done:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("ReadLoop did not return")
			return result{}
		}
	}

	t.Run("ping pong close", func(t *testing.T) {
		_, p, done := run(0, nil)
		p.send(0x80|OpPing, []byte("hi"))
		if h, b := p.next(); h.Op != OpPong || string(b) != "hi" {
			t.Fatalf("op %d %q, want pong hi", h.Op, b)
		}
		p.send(0x80|OpClose, append([]byte{0x0f, 0xa0}, "bye"...)) // 4000
		if reason := p.expectClose(4000); reason != "bye" {
			t.Errorf("echoed reason %q", reason)
		}
		var ce *CloseError
		if r := wait(done); r.send != nil || !errors.As(r.err, &ce) || ce.Code != 4000 {
			t.Fatalf("ReadLoop: %+v", r)
		}
	})

	t.Run("receive-only refuses from the header", func(t *testing.T) {
		var calls atomic.Int64
		_, p, done := run(0, func(op byte, b []byte) *CloseError {
			calls.Add(1)
			if op != OpBinary || b != nil {
				t.Errorf("onData(%d, %d bytes)", op, len(b))
			}
			return &CloseError{StatusUnsupportedData, "receive-only"}
		})
		// Only the header is sent: the refusal must not wait for the payload.
		p.nc.Write([]byte{0x80 | OpBinary, 0x80 | 127, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, 2, 3, 4})
		if r := wait(done); r.send == nil || r.send.Code != StatusUnsupportedData || r.err != nil || calls.Load() != 1 {
			t.Fatalf("ReadLoop: %+v, %d calls", r, calls.Load())
		}
	})

	t.Run("fragments assembled", func(t *testing.T) {
		got := make(chan string, 2)
		_, p, done := run(64, func(op byte, b []byte) *CloseError {
			got <- string(b)
			return nil
		})
		p.send(OpText, []byte("hel"))
		p.send(0x80|OpPing, nil) // a control frame between fragments
		p.send(0x80|OpContinuation, []byte("lo"))
		if h, _ := p.next(); h.Op != OpPong {
			t.Fatal("no pong")
		}
		if s := <-got; s != "hello" {
			t.Fatalf("message %q", s)
		}
		p.send(0x80|OpBinary, make([]byte, 65))
		if r := wait(done); r.send == nil || r.send.Code != StatusMessageTooBig || !errors.Is(r.err, ErrTooBig) {
			t.Fatalf("ReadLoop: %+v", r)
		}
	})

	for _, tc := range []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"unmasked", []byte{0x81, 0x02, 'h', 'i'}, StatusProtocolError},
		{"rsv1", []byte{0x81 | 0x40, 0x80, 0, 0, 0, 0}, StatusProtocolError},
		{"opcode 0xb", []byte{0x8b, 0x80, 0, 0, 0, 0}, StatusProtocolError},
		{"long ping", []byte{0x89, 0xfe, 0, 200, 1, 2, 3, 4}, StatusProtocolError},
		{"fragmented ping", []byte{0x09, 0x80, 0, 0, 0, 0}, StatusProtocolError},
		{"continuation first", []byte{0x80, 0x80, 0, 0, 0, 0}, StatusProtocolError},
		{"close code 1005", []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed}, StatusProtocolError},
		{"bad UTF-8", []byte{0x81, 0x81, 0, 0, 0, 0, 0xff}, StatusInvalidPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p, done := run(64, func(byte, []byte) *CloseError { return nil })
			p.nc.Write(tc.frame)
			r := wait(done)
			if r.send == nil || r.send.Code != tc.code || !errors.Is(r.err, ErrProtocol) {
				t.Fatalf("ReadLoop: %+v, want close %d", r, tc.code)
			}
			// The server closes and waits for the client's close frame.
			go func() {
				c.WriteClose(r.send.Code, r.send.Reason)
				c.AwaitClose(time.Now().Add(10 * time.Second))
				c.Close()
			}()
			p.expectClose(tc.code)
		})
	}
}

// TestPinger: a client that answers keeps being pinged; one that does not
// is found out after the timeout.
func TestPinger(t *testing.T) {
	t.Parallel()
	pg := NewPinger(20*time.Millisecond, 3*time.Second) // generous: a loaded machine may be slow to pong
	answering, p, _ := acceptPair(t, nil, "", nil)
	silent, _, _ := acceptPair(t, nil, "", nil)
	pg.Add(answering)
	pg.Add(silent)
	silentDone := make(chan error, 1)
	go func() { _, err := silent.ReadLoop(0, nil); silentDone <- err }()
	answeringDone := make(chan error, 1)
	go func() { _, err := answering.ReadLoop(0, nil); answeringDone <- err }()
	for i := range 5 {
		h, b := p.next()
		if h.Op != OpPing {
			t.Fatalf("frame %d: op %d, want ping", i, h.Op)
		}
		p.send(0x80|OpPong, b)
	}
	select {
	case err := <-silentDone:
		if !errors.Is(err, ErrPingTimeout) {
			t.Fatalf("silent client: %v, want ErrPingTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("silent client not timed out")
	}
	pg.Remove(silent)
	select {
	case err := <-answeringDone:
		t.Fatalf("answering client ended: %v", err)
	default:
	}
	pg.Remove(answering)
	answering.Close()
	if err := <-answeringDone; errors.Is(err, ErrPingTimeout) {
		t.Fatal("answering client timed out")
	}
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.quit != nil || pg.n != 0 {
		t.Error("the Pinger's goroutine still runs without connections")
	}
}

func TestAcceptKey(t *testing.T) {
	// RFC 6455 1.3's example.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("AcceptKey = %q", got)
	}
	if !HeaderHasToken(http.Header{"Connection": {"keep-alive, Upgrade"}}, "Connection", "upgrade") ||
		HeaderHasToken(http.Header{"Connection": {"keep-alive"}}, "Connection", "upgrade") {
		t.Error("HeaderHasToken")
	}
}
