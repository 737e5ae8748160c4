// Package wsframe owns every WebSocket byte relay writes or parses (RFC
// 6455): the frame codec (this file, shared with the load generator's
// client), the server's opening handshake (accept.go), the connection with
// its batch writer and close handshake (conn.go), the frame reader that
// answers control frames and checks what clients send (read.go), and the
// pings (ping.go). fanout keeps what a client is sent and when (its feed and
// slow-consumer policy) and knows frames only as prepared byte strings.
//
// The name is historical: the package began as the frame codec alone, and
// it keeps its import path so that code importing it need not change.
package wsframe

import (
	"encoding/binary"
	"errors"
)

// Opcodes (RFC 6455 5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xa
)

// MaxHeaderLen is the longest frame header: 2 bytes, 8 of extended length,
// 4 of masking key.
const MaxHeaderLen = 14

// MaxControlPayload is the most a control frame (close, ping, pong) carries.
const MaxControlPayload = 125

// ErrControlTooLong is returned for a control frame payload over 125 bytes.
var ErrControlTooLong = errors.New("wsframe: control frame payload over 125 bytes")

// Header is one frame's header.
type Header struct {
	Fin    bool
	Op     byte
	Masked bool
	Mask   [4]byte
	Len    uint64 // payload length
}

// AppendHeader appends the header of a final (FIN) frame with opcode op and
// an n-byte payload, masked with mask when mask is not nil (a client's
// frames are masked, a server's are not).
func AppendHeader(b []byte, op byte, n int, mask *[4]byte) []byte {
	var m byte
	if mask != nil {
		m = 0x80
	}
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask != nil {
		b = append(b, mask[:]...)
	}
	return b
}

// HeaderLen is the length of the header whose first two bytes are b0, b1.
func HeaderLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// ParseHeader parses the frame header at the start of b. It returns the
// header and its length, or ok false when b does not hold all of it yet.
func ParseHeader(b []byte) (h Header, n int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	n = HeaderLen(b[0], b[1])
	if len(b) < n {
		return h, 0, false
	}
	h.Fin, h.Op, h.Masked = b[0]&0x80 != 0, b[0]&0x0f, b[1]&0x80 != 0
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Len = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		h.Len = binary.BigEndian.Uint64(b[2:10])
	default:
		h.Len = uint64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[n-4:n])
	}
	return h, n, true
}

// Mask XORs p in place with key, as RFC 6455 5.3 masks (and unmasks) a
// payload that starts at offset 0.
func Mask(p []byte, key [4]byte) {
	for i := range p {
		p[i] ^= key[i%4]
	}
}

// AppendControl appends a whole control frame (op with payload p), masked
// with mask when it is not nil.
func AppendControl(b []byte, op byte, p []byte, mask *[4]byte) ([]byte, error) {
	if len(p) > MaxControlPayload {
		return b, ErrControlTooLong
	}
	b = AppendHeader(b, op, len(p), mask)
	start := len(b)
	b = append(b, p...)
	if mask != nil {
		Mask(b[start:], *mask)
	}
	return b, nil
}

// AppendClose appends a close frame with code and reason (at most 123
// bytes), masked with mask when it is not nil.
func AppendClose(b []byte, code uint16, reason string, mask *[4]byte) ([]byte, error) {
	var p [MaxControlPayload]byte
	if 2+len(reason) > len(p) {
		return b, ErrControlTooLong
	}
	binary.BigEndian.PutUint16(p[:2], code)
	n := copy(p[2:], reason)
	return AppendControl(b, OpClose, p[:2+n], mask)
}

// CloseCode returns the code of a close frame's payload, and 1005 (no
// status) when it has none.
func CloseCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}
