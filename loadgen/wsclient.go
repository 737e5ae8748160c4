package loadgen

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/relaydev/relay/shared/wsframe"
)

// wsConn is a receive-only WebSocket client made for load generation: the
// handshake, then frames parsed in place from a bufio.Reader, pings answered.
// Its bytes are encoded and parsed by shared/wsframe, the codec relay's
// server side uses too.
// A general client library allocates and copies per message; at a million
// deliveries a second on the same cores as the server under test, that
// cost would be charged to the server.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
}

var errProtocol = errors.New("loadgen: websocket protocol error")

// dialWS opens ws://addr/path and completes the opening handshake. A
// positive rcvBuf sets the socket's receive buffer (SO_RCVBUF).
func dialWS(addr, path, token string, timeout time.Duration, readBuf, rcvBuf int) (*wsConn, error) {
	conn, err := dialTCP(addr, timeout, rcvBuf)
	if err != nil {
		return nil, err
	}
	var keyBytes [16]byte
	_, _ = rand.Read(keyBytes[:])
	key := base64.StdEncoding.EncodeToString(keyBytes[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	req += "\r\n"
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, readBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("loadgen: handshake %s%s: %w", addr, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("loadgen: handshake %s%s: %s", addr, path, resp.Status)
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != wsframe.AcceptKey(key) {
		conn.Close()
		return nil, fmt.Errorf("%w: bad Sec-WebSocket-Accept", errProtocol)
	}
	_ = conn.SetDeadline(time.Time{})
	return &wsConn{conn: conn, br: br}, nil
}

// dialTCP connects; a positive rcvBuf sets SO_RCVBUF before the SYN, so
// the window the peer sees stays that small.
func dialTCP(addr string, timeout time.Duration, rcvBuf int) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	return d.Dial("tcp", addr)
}

// CloseError is how the server ended a receiver's connection.
type CloseError struct{ Code int }

func (e CloseError) Error() string { return fmt.Sprintf("websocket closed with %d", e.Code) }

// readLoop calls onMessage for every data message until the connection
// ends; it returns a CloseError when the server closed it with a close
// frame. now is called once per socket read (all messages in one read
// arrived together). A message's payload is valid only during onMessage.
func (w *wsConn) readLoop(now func() int64, onMessage func(p []byte, at int64)) error {
	br := w.br
	var at int64
	var big []byte // for frames that do not fit the read buffer
	var hdr [wsframe.MaxHeaderLen]byte
	for {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				return err
			}
			at = now()
		}
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return err
		}
		hl := wsframe.HeaderLen(hdr[0], hdr[1])
		if _, err := io.ReadFull(br, hdr[2:hl]); err != nil {
			return err
		}
		h, _, _ := wsframe.ParseHeader(hdr[:hl])
		if h.Masked {
			return fmt.Errorf("%w: masked frame from server", errProtocol)
		}
		op, n := h.Op, h.Len
		if n > 64<<20 {
			return fmt.Errorf("%w: frame of %d bytes", errProtocol, n)
		}
		var p []byte
		inPlace := int(n) <= br.Size()
		if inPlace {
			var err error
			if p, err = br.Peek(int(n)); err != nil {
				return err
			}
		} else {
			if cap(big) < int(n) {
				big = make([]byte, n)
			}
			p = big[:n]
			if _, err := io.ReadFull(br, p); err != nil {
				return err
			}
		}
		switch op {
		case wsframe.OpText, wsframe.OpBinary, wsframe.OpContinuation:
			// relay sends every message as one frame; a fragmented message
			// is timed by its first frame.
			if op != wsframe.OpContinuation {
				onMessage(p, at)
			}
		case wsframe.OpPing:
			if err := w.writeControl(wsframe.OpPong, p); err != nil {
				return err
			}
		case wsframe.OpClose:
			_ = w.writeControl(wsframe.OpClose, p[:min(len(p), 2)])
			return CloseError{Code: wsframe.CloseCode(p)}
		case wsframe.OpPong:
		default:
			return fmt.Errorf("%w: opcode %d", errProtocol, op)
		}
		if inPlace {
			_, _ = br.Discard(int(n))
		}
	}
}

// writeControl sends a masked control frame (payload at most 125 bytes).
// Only the reading goroutine writes, so no lock is needed.
func (w *wsConn) writeControl(op byte, p []byte) error {
	var buf [6 + wsframe.MaxControlPayload]byte
	var key [4]byte
	_, _ = rand.Read(key[:])
	frame, err := wsframe.AppendControl(buf[:0], op, p, &key)
	if err != nil {
		return err
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err = w.conn.Write(frame)
	return err
}

// Close closes the TCP connection.
func (w *wsConn) Close() error { return w.conn.Close() }
