package ingest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/relaydev/relay/shared/config"
)

// Errors a framer returns; the connection handler turns each into an -ERR
// line for the sender, a log line and a counter.
var (
	ErrTooLarge  = errors.New("ingest: message too large")
	ErrTruncated = errors.New("ingest: truncated frame")
)

// framer cuts a byte stream into messages.
type framer interface {
	// Next returns the next message and whether it is text (valid UTF-8 to be
	// sent as a text frame). The slice is only valid until the next call.
	// At a clean end of stream it returns io.EOF.
	Next() (msg []byte, text bool, err error)
}

func newFramer(f config.Framing, br *bufio.Reader, maxMessage int) (framer, error) {
	switch f {
	case config.FramingLine:
		return &lineFramer{br: br, max: maxMessage}, nil
	case config.FramingRaw:
		return &rawFramer{br: br, buf: make([]byte, maxMessage)}, nil
	case config.FramingLen32:
		return &len32Framer{br: br, max: maxMessage}, nil
	default:
		return nil, fmt.Errorf("ingest: unknown framing %q", f)
	}
}

// lineFramer: each \n-terminated line is a message, a trailing \r stripped.
// A last line without \n before EOF is still a message.
type lineFramer struct {
	br  *bufio.Reader
	max int
	acc []byte // only used for lines longer than the bufio buffer
	eof bool
}

func (f *lineFramer) Next() ([]byte, bool, error) {
	if f.eof {
		return nil, false, io.EOF
	}
	f.acc = f.acc[:0]
	for {
		chunk, err := f.br.ReadSlice('\n')
		switch {
		case err == nil:
			line := chunk
			if len(f.acc) > 0 {
				if len(f.acc)+len(chunk) > f.max+2 {
					return nil, false, f.tooLarge(len(f.acc) + len(chunk))
				}
				f.acc = append(f.acc, chunk...)
				line = f.acc
			}
			return f.finish(line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			// Allow max bytes plus a \r that will be stripped.
			if len(f.acc)+len(chunk) > f.max+1 {
				return nil, false, f.tooLarge(len(f.acc) + len(chunk))
			}
			f.acc = append(f.acc, chunk...)
		case errors.Is(err, io.EOF):
			f.eof = true
			if len(f.acc)+len(chunk) == 0 {
				return nil, false, io.EOF
			}
			if len(f.acc)+len(chunk) > f.max+1 {
				return nil, false, f.tooLarge(len(f.acc) + len(chunk))
			}
			f.acc = append(f.acc, chunk...)
			return f.finish(f.acc)
		default:
			if len(f.acc)+len(chunk) > 0 {
				return nil, false, fmt.Errorf("%w: %d bytes of an unfinished line: %w", ErrTruncated, len(f.acc)+len(chunk), err)
			}
			return nil, false, err
		}
	}
}

func (f *lineFramer) finish(line []byte) ([]byte, bool, error) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > f.max {
		return nil, false, f.tooLarge(len(line))
	}
	return line, utf8.Valid(line), nil
}

func (f *lineFramer) tooLarge(atLeast int) error {
	return fmt.Errorf("%w: line of at least %d bytes, max %d", ErrTooLarge, atLeast, f.max)
}

// rawFramer: each read is a message of up to max bytes, sent as binary.
type rawFramer struct {
	br  *bufio.Reader
	buf []byte
}

func (f *rawFramer) Next() ([]byte, bool, error) {
	for {
		n, err := f.br.Read(f.buf)
		if n > 0 {
			return f.buf[:n], false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// len32Framer: a 4-byte big-endian length, then that many payload bytes.
type len32Framer struct {
	br  *bufio.Reader
	max int
	hdr [4]byte
	buf []byte
}

func (f *len32Framer) Next() ([]byte, bool, error) {
	n, err := io.ReadFull(f.br, f.hdr[:])
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, io.EOF
		}
		return nil, false, fmt.Errorf("%w: %d of 4 length bytes: %w", ErrTruncated, n, err)
	}
	size := binary.BigEndian.Uint32(f.hdr[:])
	if uint64(size) > uint64(f.max) {
		return nil, false, fmt.Errorf("%w: frame of %d bytes, max %d", ErrTooLarge, size, f.max)
	}
	if cap(f.buf) < int(size) {
		f.buf = make([]byte, size, max(int(size), min(f.max, 4096)))
	}
	f.buf = f.buf[:size]
	if n, err := io.ReadFull(f.br, f.buf); err != nil {
		return nil, false, fmt.Errorf("%w: %d of %d payload bytes: %w", ErrTruncated, n, size, err)
	}
	return f.buf, false, nil
}
