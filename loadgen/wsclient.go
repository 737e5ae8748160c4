package loadgen

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// wsConn is a receive-only WebSocket client made for load generation: the
// handshake, then frames parsed in place from a bufio.Reader, pings answered.
// A general client library allocates and copies per message; at a million
// deliveries a second on the same cores as the server under test, that
// cost would be charged to the server.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
}

var errProtocol = errors.New("loadgen: websocket protocol error")

// wsGUID is RFC 6455's accept-key suffix.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

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
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
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

// WebSocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

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
	var hdr [14]byte
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
		fin, op := hdr[0]&0x80 != 0, hdr[0]&0x0f
		if hdr[1]&0x80 != 0 {
			return fmt.Errorf("%w: masked frame from server", errProtocol)
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(br, hdr[2:10]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
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
		case opText, opBinary, opContinuation:
			// relay sends every message as one frame; a fragmented message
			// is timed by its first frame.
			if op != opContinuation {
				onMessage(p, at)
			}
			_ = fin
		case opPing:
			if err := w.writeControl(opPong, p); err != nil {
				return err
			}
		case opClose:
			code := 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			_ = w.writeControl(opClose, p[:min(len(p), 2)])
			return CloseError{Code: code}
		case opPong:
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
	var buf [6 + 125]byte
	buf[0] = 0x80 | op
	buf[1] = 0x80 | byte(len(p))
	var key [4]byte
	_, _ = rand.Read(key[:])
	copy(buf[2:6], key[:])
	for i, b := range p {
		buf[6+i] = b ^ key[i%4]
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.conn.Write(buf[:6+len(p)])
	return err
}

// Close closes the TCP connection.
func (w *wsConn) Close() error { return w.conn.Close() }
