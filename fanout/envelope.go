package fanout

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// SubprotocolJSON selects the envelope: every message is a text frame
// {"channel":"…","seq":N,"time":"RFC3339Nano","data":"…"} ("data_b64" for a
// binary payload, "seq" only on durable channels), and the client may also
// be sent event frames ({"event":"live"}, {"event":"gap",…},
// {"event":"senders",…}). A client offering both relay.v1.json and relay.v1
// gets the envelope; one offering only relay.v1 (or nothing) gets the raw
// payloads, byte for byte as before the envelope existed.
const SubprotocolJSON = "relay.v1.json"

// wantsEnvelope reports whether the upgrade request offers SubprotocolJSON,
// which the server then selects (acceptOptions lists it first, and the
// library compares case-insensitively, as this does). The client's frames
// are chosen when it joins, before the 101, so this must agree with what
// Accept selects.
func wantsEnvelope(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), SubprotocolJSON) {
				return true
			}
		}
	}
	return false
}

// envelope returns m as the envelope clients send it: one text frame,
// encoded by the first envelope client that needs it and shared by pointer
// with every later one, so a channel with a thousand envelope clients
// encodes each message once, like the plain frame. Plain-only channels
// never pay for it. Safe for concurrent use: two first callers may both
// encode, one result wins and both return it.
func (m *message) envelope() *message {
	if e := m.env.Load(); e != nil {
		return e
	}
	e := newMessage(websocket.MessageText, appendEnvelope(make([]byte, 0, envelopeSize(m)), m))
	e.channel, e.seq, e.time = m.channel, m.seq, m.time
	e.env.Store(e) // an envelope is its own envelope
	if m.env.CompareAndSwap(nil, e) {
		return e
	}
	return m.env.Load()
}

// envelopeSize is a close upper guess of the envelope's length, so that
// encoding it allocates once: a text payload grows only by what it escapes.
func envelopeSize(m *message) int {
	n := len(`{"channel":"","seq":18446744073709551615,"time":"2006-01-02T15:04:05.999999999Z","data_b64":""}`) +
		len(m.channel) + 8
	if m.typ == websocket.MessageBinary {
		return n + base64.StdEncoding.EncodedLen(len(m.data))
	}
	return n + len(m.data) + len(m.data)/8
}

// appendEnvelope appends m's envelope JSON to b. It writes the bytes
// itself rather than through encoding/json: the shape is fixed, and this is
// the one encoding on the fan-out path (FuzzEnvelope checks it against
// encoding/json's decoder).
func appendEnvelope(b []byte, m *message) []byte {
	b = append(b, `{"channel":`...)
	b = appendJSONString(b, m.channel)
	if m.seq > 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, m.seq, 10)
	}
	b = append(b, `,"time":"`...)
	b = m.time.UTC().AppendFormat(b, time.RFC3339Nano)
	if m.typ == websocket.MessageBinary {
		b = append(b, `","data_b64":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.data)
		return append(b, `"}`...)
	}
	b = append(b, `","data":`...)
	b = appendJSONString(b, m.data)
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Text payloads are valid
// UTF-8 (encode sends anything else as binary); any invalid byte elsewhere
// becomes U+FFFD, as encoding/json does, so the frame is always valid JSON
// in a valid text frame. U+2028 and U+2029 are escaped too, for readers
// that evaluate JSON as JavaScript.
func appendJSONString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Event frames: sent to one envelope client (never to a plain one), in
// order with its messages. They carry no channel, seq or time, so they
// never move a client's position.
var eventLive = newEvent([]byte(`{"event":"live"}`))

// newEvent makes a text frame of an event's JSON.
func newEvent(js []byte) *message {
	e := newMessage(websocket.MessageText, js)
	e.env.Store(e)
	return e
}

// liveEvent is {"event":"live"}: replay is done, what follows is live. It
// is one shared frame.
func liveEvent() *message { return eventLive }

// gapEvent is {"event":"gap","from":A,"to":B}: messages A..B (stream
// sequences, inclusive) are no longer stored and will never be delivered.
func gapEvent(from, to uint64) *message {
	b := make([]byte, 0, 64)
	b = append(b, `{"event":"gap","from":`...)
	b = strconv.AppendUint(b, from, 10)
	b = append(b, `,"to":`...)
	b = strconv.AppendUint(b, to, 10)
	return newEvent(append(b, '}'))
}

// sendersEvent is {"event":"senders","count":N}: how many TCP senders the
// channel has now.
func sendersEvent(count int) *message {
	b := make([]byte, 0, 40)
	b = append(b, `{"event":"senders","count":`...)
	b = strconv.AppendInt(b, int64(count), 10)
	return newEvent(append(b, '}'))
}
