// Package tcpproto is the ingest TCP protocol's wire format in one place:
// the handshake line a sender writes to a handshake listener
// (`CHANNEL [TOKEN] [+ack [SESSION FIRST]]\n`) and the lines the server writes back
// (`+OK\n`, `-ERR <reason>\n`, `+ACK <n>\n`). Ingest, `relay send` and the
// load generator all use it, so the literals cannot drift apart.
//
// Channel names are not checked here (shared/subjects does that): this
// package knows the line grammar only, and imports the standard library only.
package tcpproto

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Reply literals. A reply line is one of these followed by '\n'.
const (
	OK  = "+OK"  // the handshake was accepted; data may follow
	Err = "-ERR" // a refusal; the rest of the line is the reason, then the server closes
	Ack = "+ACK" // `+ACK N`: N of the connection's messages are stored (sender acks)
)

// AckOption is the handshake's last word that asks for `+ACK N` replies. A
// token never starts with '+', so it cannot be mistaken for one.
const AckOption = "+ack"

// A session (`+ack SESSION FIRST`) names a sender's numbered messages
// across connections: message n of session S on channel C is stored with the
// Nats-Msg-Id `C:S:n` (SessionMsgID), so a sender that reconnects and resends
// from its last `+ACK` has each message stored once (within the stream's
// duplicate window). SESSION is 8 to 64 bytes of [A-Za-z0-9_-] (random: two
// senders on one channel must never share one); FIRST is the number of the
// first message the connection carries, from 1, in plain decimal.
const (
	MinSession = 8
	MaxSession = 64
)

// MaxHandshakeLine is the longest handshake line a server accepts, without
// its '\n'.
const MaxHandshakeLine = 1024

// OKLine is the whole reply that accepts a handshake.
var OKLine = []byte(OK + "\n")

// ErrLine is the whole reply that refuses a sender with reason. Line breaks in
// reason become spaces: a reply is exactly one line.
func ErrLine(reason string) []byte {
	return []byte(Err + " " + oneLine.Replace(reason) + "\n")
}

var oneLine = strings.NewReplacer("\n", " ", "\r", " ")

// AckLine is the reply that reports n messages stored.
func AckLine(n uint64) []byte {
	return append(strconv.AppendUint([]byte(Ack+" "), n, 10), '\n')
}

// ReplyKind tells what a server line means.
type ReplyKind int

// Kinds of reply line.
const (
	ReplyOther ReplyKind = iota // not part of the protocol (e.g. a control message on a line listener)
	ReplyOK
	ReplyErr
	ReplyAck
)

// Reply is a parsed server line.
type Reply struct {
	Kind   ReplyKind
	Reason string // ReplyErr: the reason; ReplyOther: the whole line
	Acked  uint64 // ReplyAck: messages stored so far
}

// ParseReply reads one server line, with or without its '\n' (a trailing
// '\r' is ignored too). A line that is not a protocol reply is ReplyOther with
// the line in Reason, so a caller can show it rather than guess.
func ParseReply(line string) Reply {
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	switch {
	case line == OK:
		return Reply{Kind: ReplyOK}
	case line == Err:
		return Reply{Kind: ReplyErr}
	case strings.HasPrefix(line, Err+" "):
		return Reply{Kind: ReplyErr, Reason: line[len(Err)+1:]}
	case strings.HasPrefix(line, Ack+" "):
		if n, err := strconv.ParseUint(line[len(Ack)+1:], 10, 64); err == nil {
			return Reply{Kind: ReplyAck, Acked: n}
		}
	}
	return Reply{Kind: ReplyOther, Reason: line}
}

// Handshake is the first line on a handshake listener:
// `CHANNEL [TOKEN] [+ack [SESSION FIRST]]`.
type Handshake struct {
	Channel string
	Token   string // empty: none
	Ack     bool   // ask for `+ACK N` replies
	// Session and First (with Ack only): the connection carries the
	// session's messages First, First+1, ... (First >= 1). Empty: no session,
	// the connection's messages are numbered on their own.
	Session string
	First   uint64
}

// ErrSyntax is wrapped by every error ParseHandshake and Handshake.Line return.
var ErrSyntax = errors.New("want CHANNEL [TOKEN] [+ack [SESSION FIRST]]")

// SessionMsgID is the Nats-Msg-Id of message n of session on channel. The
// channel is part of it because the stream's duplicate window spans every
// channel: a sender on one channel cannot suppress another channel's
// messages by picking the same session.
func SessionMsgID(channel, session string, n uint64) string {
	return SessionMsgIDPrefix(channel, session) + strconv.FormatUint(n, 10)
}

// SessionMsgIDPrefix is SessionMsgID without the message number.
func SessionMsgIDPrefix(channel, session string) string {
	return channel + ":" + session + ":"
}

// ValidSession checks a session id's syntax.
func ValidSession(s string) error {
	if len(s) < MinSession || len(s) > MaxSession {
		return fmt.Errorf("%w: a session is %d to %d bytes, got %d", ErrSyntax, MinSession, MaxSession, len(s))
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: the session has a character not allowed at byte %d: sessions use A-Z a-z 0-9 _ -", ErrSyntax, i)
		}
	}
	return nil
}

// parseFirst reads FIRST: plain decimal (no sign, no leading zero), at least 1.
func parseFirst(w string) (uint64, error) {
	n, err := strconv.ParseUint(w, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != w {
		return 0, fmt.Errorf("%w: FIRST (after the session) must be a message number from 1, in plain decimal", ErrSyntax)
	}
	return n, nil
}

// Line is the handshake line to send, with its '\n'. It checks the words'
// syntax (not whether the channel name is valid); its errors never contain
// the token.
func (h Handshake) Line() ([]byte, error) {
	if h.Channel == "" || strings.ContainsAny(h.Channel, " \r\n") || strings.HasPrefix(h.Channel, "+") {
		return nil, fmt.Errorf("%w: channel %q is empty or has a space, a line break or a leading '+'", ErrSyntax, h.Channel)
	}
	b := []byte(h.Channel)
	if h.Token != "" {
		if err := ValidToken(h.Token); err != nil {
			return nil, err
		}
		b = append(append(b, ' '), h.Token...)
	}
	if h.Ack {
		b = append(append(b, ' '), AckOption...)
	}
	if h.Session != "" || h.First != 0 {
		if !h.Ack {
			return nil, fmt.Errorf("%w: a session needs %s", ErrSyntax, AckOption)
		}
		if err := ValidSession(h.Session); err != nil {
			return nil, err
		}
		if h.First == 0 {
			return nil, fmt.Errorf("%w: FIRST must be at least 1", ErrSyntax)
		}
		b = append(append(b, ' '), h.Session...)
		b = strconv.AppendUint(append(b, ' '), h.First, 10)
	}
	if len(b) > MaxHandshakeLine {
		return nil, fmt.Errorf("%w: line longer than %d bytes", ErrSyntax, MaxHandshakeLine)
	}
	return append(b, '\n'), nil
}

// ParseHandshake parses one handshake line without its '\n' (a trailing '\r'
// is stripped). Words are separated by single spaces. The channel name is
// returned as written: validate it with shared/subjects.
func ParseHandshake(line []byte) (Handshake, error) {
	s := strings.TrimSuffix(string(line), "\r")
	if len(s) > MaxHandshakeLine {
		return Handshake{}, fmt.Errorf("%w: line longer than %d bytes", ErrSyntax, MaxHandshakeLine)
	}
	if strings.TrimSpace(s) == "" {
		return Handshake{}, fmt.Errorf("%w: empty line", ErrSyntax)
	}
	words := strings.Split(s, " ")
	var h Handshake
	// +ack is the first word after the channel that starts with '+' (a
	// channel or token never does); a session may follow it.
	if i := slices.Index(words, AckOption); i >= 1 {
		h.Ack = true
		switch rest := words[i+1:]; len(rest) {
		case 0:
		case 2:
			if err := ValidSession(rest[0]); err != nil {
				return Handshake{}, err
			}
			first, err := parseFirst(rest[1])
			if err != nil {
				return Handshake{}, err
			}
			h.Session, h.First = rest[0], first
		default:
			return Handshake{}, fmt.Errorf("%w: after %s come nothing or SESSION FIRST, got %d words", ErrSyntax, AckOption, len(rest))
		}
		words = words[:i]
	}
	if len(words) > 2 {
		return Handshake{}, fmt.Errorf("%w: got %d words before any +ack", ErrSyntax, len(words))
	}
	h.Channel = words[0]
	if h.Channel == "" {
		return Handshake{}, fmt.Errorf("%w: empty channel", ErrSyntax)
	}
	if i := strings.IndexFunc(h.Channel, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
		return Handshake{}, fmt.Errorf("%w: channel has a control byte at %d", ErrSyntax, i)
	}
	if len(words) == 2 {
		if words[1] == "" {
			return Handshake{}, fmt.Errorf("%w: empty token", ErrSyntax)
		}
		if err := ValidToken(words[1]); err != nil {
			return Handshake{}, err
		}
		h.Token = words[1]
	}
	return h, nil
}

// ValidToken accepts the characters of base64, base64url and JWTs, so a token
// can never smuggle spaces or control bytes into a line, a log or a header,
// and a token never starts with '+'. The error names the offending byte's
// position, never the token.
func ValidToken(tok string) error {
	if strings.HasPrefix(tok, "+") {
		return fmt.Errorf("%w: a token never starts with '+'", ErrSyntax)
	}
	for i := 0; i < len(tok); i++ {
		switch c := tok[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '~', c == '+', c == '/', c == '=', c == '-':
		default:
			return fmt.Errorf("%w: the token (second word) has a character not allowed at byte %d: tokens use A-Z a-z 0-9 . _ ~ + / = -", ErrSyntax, i)
		}
	}
	return nil
}
