package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"

	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tcpproto"
)

// MaxHandshakeLine is the longest handshake line accepted, without its \n.
const MaxHandshakeLine = tcpproto.MaxHandshakeLine

// ErrBadHandshake is wrapped by every handshake refusal.
var ErrBadHandshake = errors.New("ingest: bad handshake")

// handshake is a parsed first line: `CHANNEL [TOKEN] [+ack]`. The token is
// reserved for authentication (accepted and ignored in this version); +ack
// asks for `+ACK N` lines and is refused on a channel that is not durable
// (senderConn.handshake knows which are).
type handshake = tcpproto.Handshake

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

// parseHandshake parses one handshake line (without its \n): the grammar
// is tcpproto's, the channel name rules are subjects'.
func parseHandshake(line []byte) (handshake, error) {
	h, err := tcpproto.ParseHandshake(line)
	if err != nil {
		return handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	if err := subjects.ValidateChannel(h.Channel); err != nil {
		return handshake{}, fmt.Errorf("%w: %w", ErrBadHandshake, err)
	}
	return h, nil
}
