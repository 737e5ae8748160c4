package fanout

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

// envelopeJSON is the envelope as a client decodes it.
type envelopeJSON struct {
	Channel string  `json:"channel"`
	Seq     *uint64 `json:"seq"`
	Time    string  `json:"time"`
	Data    *string `json:"data"`
	DataB64 *string `json:"data_b64"`
}

func decodeEnvelope(t testing.TB, b []byte) envelopeJSON {
	t.Helper()
	var e envelopeJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("envelope %q: %v", b, err)
	}
	return e
}

func TestEnvelopeFrame(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 15, 4, 5, 123456789, time.FixedZone("X", 3600))
	tests := []struct {
		name string
		typ  websocket.MessageType
		data []byte
		seq  uint64
		want string
	}{
		{"text, core channel: no seq", websocket.MessageText, []byte("hello"), 0,
			`{"channel":"sensors.a","time":"2026-12-03T14:04:05.123456789Z","data":"hello"}`},
		{"text, durable channel", websocket.MessageText, []byte("hello"), 42,
			`{"channel":"sensors.a","seq":42,"time":"2026-12-03T14:04:05.123456789Z","data":"hello"}`},
		{"escapes", websocket.MessageText, []byte("q\"b\\n\n\r\t\x01\x1f</>&é\u2028x"), 0,
			`{"channel":"sensors.a","time":"2026-12-03T14:04:05.123456789Z","data":"q\"b\\n\n\r\t\u0001\u001f</>&é\u2028x"}`},
		{"empty text", websocket.MessageText, []byte{}, 0,
			`{"channel":"sensors.a","time":"2026-12-03T14:04:05.123456789Z","data":""}`},
		{"binary", websocket.MessageBinary, []byte{0, 0xff, 'a'}, 7,
			`{"channel":"sensors.a","seq":7,"time":"2026-12-03T14:04:05.123456789Z","data_b64":"AP9h"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMessage(tt.typ, tt.data)
			m.channel, m.seq, m.time = "sensors.a", tt.seq, at
			e := m.envelope()
			if string(e.data) != tt.want {
				t.Errorf("envelope\n got %s\nwant %s", e.data, tt.want)
			}
			if e.typ != websocket.MessageText {
				t.Errorf("envelope frame type %v, want text", e.typ)
			}
			if e.channel != m.channel || e.seq != m.seq || !e.time.Equal(m.time) {
				t.Errorf("envelope message lost channel/seq/time: %q %d %v", e.channel, e.seq, e.time)
			}
			checkFrameHeader(t, e)
		})
	}
}

// checkFrameHeader checks that m's shared header is the one a text frame
// of its length needs.
func checkFrameHeader(t testing.TB, m *message) {
	t.Helper()
	want := newMessage(m.typ, m.data)
	if !bytes.Equal(m.hdr[:m.hdrLen], want.hdr[:want.hdrLen]) {
		t.Errorf("frame header %x, want %x", m.hdr[:m.hdrLen], want.hdr[:want.hdrLen])
	}
}

// FuzzEnvelope: whatever the payload and channel, the envelope is valid
// JSON in valid UTF-8 (a browser fails the connection on an invalid text
// frame), and decodes back to the payload and channel.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{"", "x", `"\`, "\x00\x7f", "é\u2028\u2029", "a\xffb", "\xed\xa0\x80", strings.Repeat("ü", 40)} {
		f.Add([]byte(s), "sensors.a", uint64(0), false)
		f.Add([]byte(s), s, uint64(1<<63), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, channel string, seq uint64, binary bool) {
		typ := websocket.MessageText
		if binary || !utf8.Valid(data) {
			typ = websocket.MessageBinary
		}
		m := newMessage(typ, data)
		m.channel, m.seq, m.time = channel, seq, time.Unix(0, int64(seq>>1)).UTC()
		b := m.envelope().data
		if !utf8.Valid(b) {
			t.Fatalf("envelope is not valid UTF-8: %q", b)
		}
		e := decodeEnvelope(t, b)
		if utf8.ValidString(channel) && e.Channel != channel {
			t.Errorf("channel %q, want %q", e.Channel, channel)
		}
		if (e.Seq != nil) != (seq > 0) || (e.Seq != nil && *e.Seq != seq) {
			t.Errorf("seq %v, want %d (absent when 0)", e.Seq, seq)
		}
		if tm, err := time.Parse(time.RFC3339Nano, e.Time); err != nil || !tm.Equal(m.time) {
			t.Errorf("time %q (%v), want %v", e.Time, err, m.time)
		}
		switch typ {
		case websocket.MessageText:
			if e.Data == nil || *e.Data != string(data) || e.DataB64 != nil {
				t.Errorf("text %q: data %v data_b64 %v", data, e.Data, e.DataB64)
			}
		default:
			if e.DataB64 == nil || e.Data != nil {
				t.Fatalf("binary %q: data %v data_b64 %v", data, e.Data, e.DataB64)
			}
			if got, err := base64.StdEncoding.DecodeString(*e.DataB64); err != nil || !bytes.Equal(got, data) {
				t.Errorf("data_b64 %q decodes to %q (%v), want %q", *e.DataB64, got, err, data)
			}
		}
	})
}

// The envelope is encoded once per message, however many envelope clients
// (and goroutines) ask for it, and shared by pointer.
func TestEnvelopeEncodedOnce(t *testing.T) {
	t.Parallel()
	m := newMessage(websocket.MessageText, []byte("once"))
	m.channel, m.time = "c", time.Now()
	got := make([]*message, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i] = m.envelope() })
	}
	wg.Wait()
	for i, e := range got {
		if e != got[0] {
			t.Fatalf("caller %d got a different envelope", i)
		}
	}
	if got[0].envelope() != got[0] {
		t.Error("an envelope's envelope is not itself")
	}

	// Through the hub: a channel with envelope and plain clients queues one
	// shared envelope for all envelope clients and the raw message for the
	// plain ones.
	h := newHub(nil, mustMapper(t), metrics.New().Fanout, discard, 1, 1, time.Second)
	ch := &channel{h: h, name: "c", ready: make(chan struct{})}
	lim := clientLimits{queueMsgs: 16, queueBytes: 1 << 20, maxBytes: 1 << 20, slowGrace: time.Hour, closeGrace: time.Second}
	var clients []*client
	for i := range 4 {
		c := newClient("c", lim, h.m, discard)
		c.envelope = i%2 == 0
		ch.add(c)
		clients = append(clients, c)
	}
	ch.deliver(&nats.Msg{Subject: "relay.ch.c", Data: []byte("x")})
	q := func(c *client) *message { c.mu.Lock(); defer c.mu.Unlock(); return c.feed.queue[0] }
	if q(clients[0]) != q(clients[2]) {
		t.Error("envelope clients were queued different envelopes")
	}
	if q(clients[1]) != q(clients[3]) || string(q(clients[1]).data) != "x" {
		t.Error("plain clients were not queued the shared raw message")
	}
	if q(clients[0]) != q(clients[1]).envelope() {
		t.Error("the envelope clients' frame is not the raw message's envelope")
	}
}

// dialProto opens a receiver offering subprotocols.
func (e *env) dialProto(channel string, protos ...string) *websocket.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL+"/ws/"+channel, &websocket.DialOptions{Subprotocols: protos})
	if err != nil {
		e.t.Fatalf("dial %s %v: %v", channel, protos, err)
	}
	c.SetReadLimit(4 << 20)
	e.t.Cleanup(func() { c.CloseNow() })
	return c
}

// A relay.v1.json client gets envelopes, on the same channel and at the
// same time as plain clients, which get the raw payloads byte for byte.
func TestEnvelopeSubprotocol(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	envc := e.dialProto("env.a", SubprotocolJSON)
	both := e.dialProto("env.a", SubprotocolV1, "relay.V1.JSON") // case-insensitive, as the library selects
	v1 := e.dialProto("env.a", SubprotocolV1)
	none := e.dial("env.a", nil)
	for c, want := range map[*websocket.Conn]string{envc: SubprotocolJSON, both: "relay.V1.JSON", v1: SubprotocolV1, none: ""} {
		if got := c.Subprotocol(); got != want {
			t.Errorf("selected subprotocol %q, want %q", got, want)
		}
	}
	payloads := []struct {
		format string
		data   []byte
		typ    websocket.MessageType
	}{
		{"", []byte(`{"looks":"like json"}`), websocket.MessageText},
		{"", []byte{0xff, 0x00, 0x10}, websocket.MessageBinary},
		{subjects.FormatBinary, []byte("forced binary"), websocket.MessageBinary},
		{"", []byte(""), websocket.MessageText},
	}
	before := time.Now()
	for _, p := range payloads {
		m := nats.NewMsg("relay.ch.env.a")
		m.Data = p.data
		if p.format != "" {
			m.Header.Set(subjects.FormatHeader, p.format)
		}
		if err := e.pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	e.flush()
	for _, c := range []*websocket.Conn{v1, none} {
		for _, p := range payloads {
			typ, b := read(t, c, 10*time.Second)
			if typ != p.typ || !bytes.Equal(b, p.data) {
				t.Errorf("plain client: got %v %q, want %v %q", typ, b, p.typ, p.data)
			}
		}
	}
	for _, c := range []*websocket.Conn{envc, both} {
		for _, p := range payloads {
			typ, b := read(t, c, 10*time.Second)
			if typ != websocket.MessageText {
				t.Fatalf("envelope frame type %v, want text", typ)
			}
			env := decodeEnvelope(t, b)
			if env.Channel != "env.a" || env.Seq != nil {
				t.Errorf("envelope %s: want channel env.a and no seq", b)
			}
			if tm, err := time.Parse(time.RFC3339Nano, env.Time); err != nil || tm.Before(before.Add(-time.Second)) ||
				tm.After(time.Now().Add(time.Second)) {
				t.Errorf("envelope time %q (%v) not the delivery time", env.Time, err)
			}
			if p.typ == websocket.MessageText {
				if env.Data == nil || *env.Data != string(p.data) {
					t.Errorf("envelope %s: want data %q", b, p.data)
				}
			} else if env.DataB64 == nil || *env.DataB64 != base64.StdEncoding.EncodeToString(p.data) {
				t.Errorf("envelope %s: want data_b64 of %q", b, p.data)
			}
		}
	}
}

// hubClients returns the server's clients of channel.
func (e *env) hubClients(channel string) []*client {
	e.srv.hub.mu.Lock()
	ch := e.srv.hub.channels[channel]
	e.srv.hub.mu.Unlock()
	if ch == nil {
		return nil
	}
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	return append([]*client(nil), ch.clients...)
}

// An event is queued to one client, in order with its messages; other
// clients of the channel see nothing of it, and plain clients are never
// sent events.
func TestEventToOneClient(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	a := e.dialProto("ev", SubprotocolJSON)
	b := e.dialProto("ev", SubprotocolJSON)
	p := e.dial("ev", nil)
	clients := e.hubClients("ev")
	if len(clients) != 3 {
		t.Fatalf("%d clients in the hub, want 3", len(clients))
	}
	e.publish("ev", []byte("one"))
	e.flush()
	for _, c := range []*websocket.Conn{a, b, p} {
		read(t, c, 10*time.Second)
	}
	// The clients' order in the hub is not the dial order: find a's by
	// sending it a first event and seeing which connection gets it.
	var target *client
	for _, c := range clients {
		if !c.envelope {
			if c.sendEvent(liveEvent()) {
				t.Error("a plain client was sent an event")
			}
			continue
		}
		if target == nil {
			target = c
		}
	}
	if !target.sendEvent(gapEvent(5, 9)) || !target.sendEvent(sendersEvent(3)) || !target.sendEvent(liveEvent()) {
		t.Fatal("sendEvent refused an envelope client")
	}
	e.publish("ev", []byte("two"))
	e.flush()
	want := []string{`{"event":"gap","from":5,"to":9}`, `{"event":"senders","count":3}`, `{"event":"live"}`}
	var gotEvents, other *websocket.Conn
	for _, c := range []*websocket.Conn{a, b} {
		_, first := read(t, c, 10*time.Second)
		if string(first) == want[0] {
			gotEvents = c
			for _, w := range want[1:] {
				if _, got := read(t, c, 10*time.Second); string(got) != w {
					t.Errorf("event %q, want %q", got, w)
				}
			}
			_, first = read(t, c, 10*time.Second)
		} else {
			other = c
		}
		if env := decodeEnvelope(t, first); env.Data == nil || *env.Data != "two" {
			t.Errorf("after the events: %s, want the message two", first)
		}
	}
	if gotEvents == nil || other == nil {
		t.Fatal("the events did not reach exactly one of the two envelope clients")
	}
	if _, got := read(t, p, 10*time.Second); string(got) != "two" {
		t.Errorf("plain client got %q, want two", got)
	}
	for _, js := range want {
		var v map[string]any
		if err := json.Unmarshal([]byte(js), &v); err != nil {
			t.Errorf("event %s is not JSON: %v", js, err)
		}
	}
}

// A client offering a bearer token and relay.v1.json is selected
// relay.v1.json, never the token.
func TestEnvelopeNeverEchoesToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.wsURL+"/ws/tok", &websocket.DialOptions{
		Subprotocols: []string{BearerPrefix + "secret", SubprotocolJSON}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != SubprotocolJSON {
		t.Errorf("selected %q, want %q", got, SubprotocolJSON)
	}
}
