package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"

	"github.com/relaydev/relay/shared/subjects"
)

// MaxHandshakeLine is the longest handshake line accepted, without its \n.
const MaxHandshakeLine = 1024

// ErrBadHandshake is wrapped by every handshake refusal.
var ErrBadHandshake = errors.New("ingest: bad handshake")

// handshake is a parsed first line: `CHANNEL [TOKEN]`.
type handshake struct {
	Channel string
	Token   string // reserved for authentication; accepted and ignored in this version
}

// readHandshake reads the first line without consuming any byte after its
// \n: data a sender pipelines behind the handshake stays in br.
func readHandshake(br *bufio.Reader) (handshake, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			if i > MaxHandshakeLine+1 { // +1: a \r may precede the \n
				return handshake{}, fmt.Errorf("%w: line longer than %d bytes", ErrBadHandshake, MaxHandshakeLine)
			}
			h, err := parseHandshake(buf[:i])
			br.Discard(i + 1)
			return h, err
		}
		if len(buf) > MaxHandshakeLine+1 {
			return handshake{}, fmt.Errorf("%w: line longer than %d bytes", ErrBadHandshake, MaxHandshakeLine)
		}
		// Wait for more bytes; Peek fills the buffer with what has arrived.
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return handshake{}, err
		}
	}
}

// parseHandshake parses one handshake line (without its \n).
func parseHandshake(line []byte) (handshake, error) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > MaxHandshakeLine {
		return handshake{}, fmt.Errorf("%w: line longer than %d bytes", ErrBadHandshake, MaxHandshakeLine)
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return handshake{}, fmt.Errorf("%w: empty line; send CHANNEL [TOKEN]", ErrBadHandshake)
	}
	fields := bytes.Split(line, []byte(" "))
	if len(fields) > 2 {
		return handshake{}, fmt.Errorf("%w: want CHANNEL [TOKEN], got %d words", ErrBadHandshake, len(fields))
	}
	h := handshake{Channel: string(fields[0])}
	if len(fields) == 2 {
		if len(fields[1]) == 0 {
			return handshake{}, fmt.Errorf("%w: empty token", ErrBadHandshake)
		}
		if err := validToken(fields[1]); err != nil {
			return handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
		}
		h.Token = string(fields[1])
	}
	if err := subjects.ValidateChannel(h.Channel); err != nil {
		return handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	return h, nil
}

// validToken accepts the characters of base64, base64url and JWTs, so a
// token can never smuggle spaces or control bytes into logs or headers.
func validToken(tok []byte) error {
	for i, c := range tok {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '~', c == '+', c == '/', c == '=', c == '-':
		default:
			return fmt.Errorf("want CHANNEL [TOKEN], and the token (second word) has character %q at byte %d: tokens use A-Z a-z 0-9 . _ ~ + / = -", c, i)
		}
	}
	return nil
}
