package wsframe

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzReadLoop: any bytes from a client end ReadLoop without a panic, and
// the outcome (messages handed over, the close to send, why it stopped) is
// the same wherever the bytes are split between what came with the upgrade
// request and what the socket delivers, and however the socket cuts them.
func FuzzReadLoop(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	masked := func(b0 byte, p string) []byte {
		h := append([]byte{b0}, AppendHeader(nil, 0, len(p), &key)[1:]...)
		m := []byte(p)
		Mask(m, key)
		return append(h, m...)
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	f.Add(cat(masked(0x80|OpPing, "hi"), masked(0x80|OpText, "hello")), uint8(16))
	f.Add(cat(masked(OpText, "hel"), masked(0x80|OpPong, ""), masked(0x80|OpContinuation, "lo")), uint8(16))
	f.Add(cat(masked(0x80|OpBinary, "too long for the limit"), masked(0x80|OpClose, "\x03\xe8")), uint8(4))
	f.Add(cat(masked(0x80|OpClose, "\x0f\xa0bye")), uint8(0))
	f.Add([]byte{0x81, 0x02, 'h', 'i'}, uint8(8))
	f.Add(cat(masked(0x80|OpText, "\xff")), uint8(8))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, b []byte, limit uint8) {
		if len(b) > 512 {
			return
		}
		var want string
		for i := 0; i <= len(b) && i <= 24; i++ {
			got := readOutcome(t, ln, b[:i], b[i:], int(limit))
			if i == 0 {
				want = got
			} else if got != want {
				t.Fatalf("split at %d: %s; unsplit: %s", i, got, want)
			}
		}
	})
}

// readOutcome runs ReadLoop on a real connection over which the client
// sends rest (after pending, given as if read with the upgrade request) in
// small writes, then half-closes, and describes what ReadLoop did.
func readOutcome(t *testing.T, ln net.Listener, pending, rest []byte, limit int) string {
	cl, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, 10*time.Second)
	defer c.Close()
	if len(pending) > 0 {
		c.pending = pending
	}
	go func() {
		for len(rest) > 0 {
			n := min(len(rest), 7)
			if _, err := cl.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		cl.(*net.TCPConn).CloseWrite()
	}()
	go io.Copy(io.Discard, cl) // pongs and close replies
	var msgs []string
	send, err := c.ReadLoop(limit, func(op byte, p []byte) *CloseError {
		msgs = append(msgs, fmt.Sprintf("%d:%q", op, p))
		return nil
	})
	why := "eof"
	var ce *CloseError
	switch {
	case errors.As(err, &ce):
		why = ce.Error()
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrTooBig):
		why = err.Error()
	case errors.Is(err, io.EOF):
	default:
		t.Fatalf("ReadLoop: %v", err)
	}
	return fmt.Sprintf("messages %v, send %v, %s", msgs, send, why)
}
