package tcpproto

import (
	"errors"
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want Reply
	}{
		{"+OK\n", Reply{Kind: ReplyOK}},
		{"+OK\r\n", Reply{Kind: ReplyOK}},
		{"+OK", Reply{Kind: ReplyOK}},
		{"-ERR message too large (max 10 bytes)\n", Reply{Kind: ReplyErr, Reason: "message too large (max 10 bytes)"}},
		{"-ERR\n", Reply{Kind: ReplyErr}},
		{"+ACK 42\n", Reply{Kind: ReplyAck, Acked: 42}},
		{"+ACK x\n", Reply{Kind: ReplyOther, Reason: "+ACK x"}},
		{"+OKAY\n", Reply{Kind: ReplyOther, Reason: "+OKAY"}},
		{"-ERRx\n", Reply{Kind: ReplyOther, Reason: "-ERRx"}},
		{"hello from a watcher\n", Reply{Kind: ReplyOther, Reason: "hello from a watcher"}},
	}
	for _, tt := range tests {
		if got := ParseReply(tt.line); got != tt.want {
			t.Errorf("ParseReply(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestReplyLinesRoundTrip(t *testing.T) {
	t.Parallel()
	if got := ParseReply(string(OKLine)); got.Kind != ReplyOK || string(OKLine) != "+OK\n" {
		t.Fatalf("OKLine %q parses as %+v", OKLine, got)
	}
	line := ErrLine("bad\nhandshake\r")
	if string(line) != "-ERR bad handshake \n" {
		t.Fatalf("ErrLine = %q: a reply must be one line", line)
	}
	if got := ParseReply(string(line)); got.Kind != ReplyErr || got.Reason != "bad handshake " {
		t.Fatalf("ErrLine parses as %+v", got)
	}
	if got := ParseReply(string(AckLine(7))); got.Kind != ReplyAck || got.Acked != 7 || string(AckLine(7)) != "+ACK 7\n" {
		t.Fatalf("AckLine(7) = %q parses as %+v", AckLine(7), got)
	}
}

func TestParseHandshake(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want Handshake
		ok   bool
	}{
		{"default", Handshake{Channel: "default"}, true},
		{"default\r", Handshake{Channel: "default"}, true},
		{"s.a-1 s3cr3t", Handshake{Channel: "s.a-1", Token: "s3cr3t"}, true},
		{"ch eyJhbGciOi.J9_x-y+z/w==", Handshake{Channel: "ch", Token: "eyJhbGciOi.J9_x-y+z/w=="}, true},
		{"ch +ack", Handshake{Channel: "ch", Ack: true}, true},
		{"ch tok +ack", Handshake{Channel: "ch", Token: "tok", Ack: true}, true},
		{"", Handshake{}, false},
		{"  ", Handshake{}, false},
		{"a b c", Handshake{}, false},
		{"a tok +ack x", Handshake{}, false},
		{"ch +ack sess-0001 1", Handshake{Channel: "ch", Ack: true, Session: "sess-0001", First: 1}, true},
		{"ch tok +ack S_abcdefgh 18446744073709551615", Handshake{Channel: "ch", Token: "tok", Ack: true, Session: "S_abcdefgh", First: 18446744073709551615}, true},
		{"ch +ack sess-0001 0", Handshake{}, false},
		{"ch +ack sess-0001 01", Handshake{}, false},
		{"ch +ack sess-0001 +1", Handshake{}, false},
		{"ch +ack sess-0001 18446744073709551616", Handshake{}, false},
		{"ch +ack short 1", Handshake{}, false},
		{"ch +ack sess:0001 1", Handshake{}, false},
		{"ch +ack " + strings.Repeat("s", MaxSession+1) + " 1", Handshake{}, false},
		{"ch +ack sess-0001", Handshake{}, false},
		{"ch +ack sess-0001 1 x", Handshake{}, false},
		{"ch sess-0001 1", Handshake{}, false},
		{"ch tok sess-0001 1 +ack", Handshake{}, false},
		{"a ", Handshake{}, false},
		{"a +tok", Handshake{}, false},
		{"a t\x00k", Handshake{}, false},
		{strings.Repeat("c", MaxHandshakeLine+1), Handshake{}, false},
	}
	for _, tt := range tests {
		got, err := ParseHandshake([]byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseHandshake(%q) = %+v, %v; want %+v ok=%v", tt.line, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseHandshake(%q) error %v does not wrap ErrSyntax", tt.line, err)
		}
	}
}

// TestHandshakeErrorsHideToken: a refused token is described by position,
// never echoed, since the error may reach a log or a -ERR line.
func TestHandshakeErrorsHideToken(t *testing.T) {
	t.Parallel()
	const secret = "s3cret!value"
	_, err := ParseHandshake([]byte("ch " + secret))
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("ParseHandshake error %v", err)
	}
	_, err = Handshake{Channel: "ch", Token: secret}.Line()
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Line error %v", err)
	}
}

func TestSessionMsgID(t *testing.T) {
	t.Parallel()
	if got := SessionMsgID("a.b", "sess-0001", 7); got != "a.b:sess-0001:7" {
		t.Fatalf("SessionMsgID = %q", got)
	}
}

func TestHandshakeLine(t *testing.T) {
	t.Parallel()
	for _, h := range []Handshake{
		{Channel: "a"}, {Channel: "a", Token: "t.k"}, {Channel: "a", Ack: true}, {Channel: "a.b", Token: "x", Ack: true},
		{Channel: "a", Ack: true, Session: "0123456789abcdef", First: 42}, {Channel: "a", Token: "x", Ack: true, Session: "abc-def_g", First: 1},
	} {
		line, err := h.Line()
		if err != nil {
			t.Fatalf("%+v: %v", h, err)
		}
		back, err := ParseHandshake(line[:len(line)-1])
		if err != nil || back != h {
			t.Fatalf("%+v -> %q -> %+v, %v", h, line, back, err)
		}
	}
	for _, h := range []Handshake{{}, {Channel: "a b"}, {Channel: "+ack"}, {Channel: "a", Token: "t k"},
		{Channel: "a", Session: "0123456789", First: 1}, {Channel: "a", Ack: true, Session: "0123456789"},
		{Channel: "a", Ack: true, Session: "short", First: 1}, {Channel: "a", Ack: true, First: 3}} {
		if line, err := h.Line(); err == nil {
			t.Errorf("%+v.Line() = %q, want an error", h, line)
		}
	}
}

// FuzzHandshake: whatever ParseHandshake accepts, Line writes back to the
// same line, and nothing accepted carries a space or a line break.
func FuzzHandshake(f *testing.F) {
	for _, s := range []string{"default", "a.b tok", "a tok +ack", "a +ack", "a b c", "a ", "\r", "+ack",
		"a +ack sess-0001 1", "a tok +ack sess-0001 99", "a +ack s 1", "a +ack sess-0001 01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHandshake(data)
		if err != nil {
			return
		}
		if strings.ContainsAny(h.Channel+h.Token, " \r\n") || strings.ContainsAny(h.Session, " \r\n:") || h.Channel == "" || strings.HasPrefix(h.Token, "+") ||
			(h.Session != "") != (h.First > 0) || (h.Session != "" && !h.Ack) {
			t.Fatalf("accepted %+v from %q", h, data)
		}
		line, err := h.Line()
		if err != nil {
			if strings.HasPrefix(h.Channel, "+") {
				return // Line refuses a channel starting with '+'; subjects refuses it at the server.
			}
			t.Fatalf("%+v from %q: Line: %v", h, data, err)
		}
		if got := strings.TrimSuffix(string(data), "\r"); string(line) != got+"\n" {
			t.Fatalf("%q -> %+v -> %q", data, h, line)
		}
	})
}

// FuzzReply: any reason survives ErrLine and ParseReply as one line, and
// ParseReply classifies any input without panicking.
func FuzzReply(f *testing.F) {
	for _, s := range []string{"", "too large", "a\nb", "+OK", "-ERR x", "+ACK 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ParseReply(s)
		line := string(ErrLine(s))
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
			t.Fatalf("ErrLine(%q) = %q is not one line", s, line)
		}
		r := ParseReply(line)
		want := strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
		if r.Kind != ReplyErr || r.Reason != want {
			t.Fatalf("ErrLine(%q) parses as %+v", s, r)
		}
	})
}
