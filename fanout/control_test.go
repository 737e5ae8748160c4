package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

func controlOpts(rate float64, maxMsg int) func(*Options) {
	return func(o *Options) {
		o.Control = config.Control{ControlChannels: []string{"dev.>"}, FanoutControlRate: rate, FanoutControlMax: maxMsg}
	}
}

// ctlSub collects what clients publish for channel's senders.
func (e *env) ctlSub(channel string) *nats.Subscription {
	e.t.Helper()
	sub, err := e.pub.SubscribeSync("relay.ctl." + channel)
	if err != nil {
		e.t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := e.pub.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return sub
}

func write(t testing.TB, c *websocket.Conn, typ websocket.MessageType, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestControlFramesArePublished: on a control channel a client's text and
// binary frames go to <prefix>.ctl.<channel> unchanged, in order, and the
// client keeps receiving the channel.
func TestControlFramesArePublished(t *testing.T) {
	t.Parallel()
	e := startEnv(t, controlOpts(0, 1024))
	sub := e.ctlSub("dev.1")
	c := e.dial("dev.1", nil)
	write(t, c, websocket.MessageText, []byte("reboot"))
	write(t, c, websocket.MessageBinary, []byte{0, 1, 0xff})
	write(t, c, websocket.MessageText, []byte(""))
	for i, want := range []string{"reboot", "\x00\x01\xff", ""} {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("control message %d: %v", i, err)
		}
		if string(m.Data) != want {
			t.Errorf("control message %d = %q, want %q", i, m.Data, want)
		}
		if bin := m.Header.Get(subjects.FormatHeader) == subjects.FormatBinary; bin != (i == 1) {
			t.Errorf("control message %d: binary header %v", i, bin)
		}
	}
	e.publish("dev.1", []byte("still watching"))
	if _, b := read(t, c, 10*time.Second); string(b) != "still watching" {
		t.Errorf("got %q", b)
	}
	if got := val(e.m.ControlMessages); got != 3 {
		t.Errorf("relay_fanout_control_messages_total = %v, want 3", got)
	}
}

// TestControlRefusals: elsewhere client data is refused with 1003 as
// before; a frame over the maximum closes with 1009; nothing is published.
func TestControlRefusals(t *testing.T) {
	t.Parallel()
	e := startEnv(t, controlOpts(0, 16))
	sub := e.ctlSub(">")

	c := e.dial("other", nil)
	write(t, c, websocket.MessageText, []byte("hi"))
	if _, err := readErr(c, 10*time.Second); websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Errorf("data on a channel that is not a control channel: %v, want 1003", err)
	}

	// A pattern's watcher talks to no one (which channel's senders?).
	c = e.dial("dev.*", nil)
	write(t, c, websocket.MessageText, []byte("hi"))
	if _, err := readErr(c, 10*time.Second); websocket.CloseStatus(err) != websocket.StatusUnsupportedData {
		t.Errorf("data on a pattern of control channels: %v, want 1003", err)
	}

	c = e.dial("dev.big", nil)
	write(t, c, websocket.MessageText, []byte(strings.Repeat("x", 16))) // at the maximum: taken
	write(t, c, websocket.MessageBinary, []byte(strings.Repeat("x", 17)))
	_, err := readErr(c, 10*time.Second)
	if websocket.CloseStatus(err) != websocket.StatusMessageTooBig || !strings.Contains(err.Error(), "max 16 bytes") {
		t.Errorf("a frame over the maximum: %v, want 1009 with the maximum", err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil || len(m.Data) != 16 {
		t.Fatalf("the frame at the maximum: %v %v", m, err)
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("published %q after the refusals", m.Data)
	}
	if got := val(e.m.Disconnects.With(metrics.DisconnectControlTooLarge)); got != 1 {
		t.Errorf("control_too_large disconnects = %v", got)
	}
}

// TestControlPermission: with auth on, a token without the control
// permission may watch a control channel but its first frame closes it
// with 4403; one with it talks back.
func TestControlPermission(t *testing.T) {
	t.Parallel()
	e, keys := startAuthEnv(t, func(o *auth.Options) { o.PublicWatch = []string{"dev.public"} }, controlOpts(0, 1024))
	sub := e.ctlSub(">")
	dialTok := func(channel, tok string) *websocket.Conn {
		h := http.Header{}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		return e.dial(channel, h)
	}
	cases := []struct {
		name, channel, token string
		ok                   bool
	}{
		{"watch only", "dev.1", keys.Token(t, "w", auth.Permissions{Watch: []string{"dev.>"}}, time.Hour), false},
		{"control elsewhere", "dev.1", keys.Token(t, "x", auth.Permissions{Watch: []string{"dev.>"}, Control: []string{"dev.2"}}, time.Hour), false},
		{"public watcher", "dev.public", "", false},
		{"control", "dev.1", keys.Token(t, "c", auth.Permissions{Watch: []string{"dev.>"}, Control: []string{"dev.*"}}, time.Hour), true},
	}
	for _, tc := range cases {
		c := dialTok(tc.channel, tc.token)
		write(t, c, websocket.MessageText, []byte(tc.name))
		if tc.ok {
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil || string(m.Data) != tc.name {
				t.Errorf("%s: not published: %v", tc.name, err)
			}
			continue
		}
		_, err := readErr(c, 10*time.Second)
		if websocket.CloseStatus(err) != StatusForbidden || !strings.Contains(err.Error(), "no control permission") {
			t.Errorf("%s: %v, want 4403 no control permission", tc.name, err)
		}
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("published %q from a client without the control permission", m.Data)
	}
	if got := val(e.m.Disconnects.With(metrics.DisconnectControlForbidden)); got != 3 {
		t.Errorf("control_forbidden disconnects = %v, want 3", got)
	}
}

// TestControlRateIsBackpressure: a client over RELAY_FANOUT_CONTROL_RATE
// is read more slowly, and every frame it sent is still published, in order.
func TestControlRateIsBackpressure(t *testing.T) {
	t.Parallel()
	const rate, n = 20, 60
	e := startEnv(t, controlOpts(rate, 1024))
	sub := e.ctlSub("dev.r")
	c := e.dial("dev.r", nil)
	start := time.Now()
	go func() {
		for i := range n {
			if err := c.Write(context.Background(), websocket.MessageText, fmt.Appendf(nil, "%d", i)); err != nil {
				return
			}
		}
	}()
	for i := range n {
		m, err := sub.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, m.Data)
		}
	}
	took := time.Since(start)
	// The token bucket holds `rate` frames and refills at `rate` per second
	// (the wait comes after a frame, before the next is read), so the last
	// frame cannot have been read earlier than this (a lower bound: a slow
	// machine only makes it later).
	if floor := time.Duration(n-rate-1) * time.Second / rate; took < floor {
		t.Errorf("%d frames at %d/s published in %s, faster than the rate allows (%s)", n, rate, took, floor)
	}
	if val(e.m.ControlThrottled) == 0 {
		t.Error("no throttling counted")
	}
	if got := val(e.m.Disconnects.With(metrics.DisconnectClientData)); got != 0 {
		t.Errorf("client closed for its data: %v", got)
	}
	t.Logf("%d frames sent at once, rate %d/s: all published in order in %s, none dropped", n, rate, took.Round(time.Millisecond))
}

// TestPresenceAndChannelInfo: the sender counts ingest pods announce are
// summed, a pod that stops announcing is forgotten, and
// /api/channels/{channel} reports them with the local watchers.
func TestPresenceAndChannelInfo(t *testing.T) {
	t.Parallel()
	e := startEnv(t, controlOpts(0, 1024))
	announce := func(pod string, n int, ttl time.Duration) {
		b, _ := json.Marshal(subjects.Presence{Pod: pod, Senders: n, TTLMillis: ttl.Milliseconds()})
		if err := e.pub.Publish("relay.ev.dev.p", b); err != nil {
			t.Fatal(err)
		}
		e.flush()
	}
	info := func() channelInfo {
		resp, err := http.Get("http://" + e.srv.Addr().String() + "/api/channels/dev.p")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ci channelInfo
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: %s", resp.Status, b)
		}
		if err := json.NewDecoder(resp.Body).Decode(&ci); err != nil {
			t.Fatal(err)
		}
		return ci
	}
	waitSenders := func(want int) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			if got := info().Senders; got != want {
				return fmt.Errorf("senders %d, want %d", got, want)
			}
			return nil
		})
	}
	e.dial("dev.p", nil)
	e.dial("dev.p", nil)
	announce("a", 2, time.Hour)
	announce("b", 3, time.Hour)
	waitSenders(5)
	ci := info()
	if ci.Watchers != 2 || !ci.Control || ci.Channel != "dev.p" {
		t.Errorf("info %+v: want 2 watchers on a control channel", ci)
	}
	announce("a", 0, time.Hour)
	waitSenders(3)
	announce("c", 1, 500*time.Millisecond) // then silent: forgotten
	waitSenders(4)
	waitSenders(3)

	resp, err := http.Get("http://" + e.srv.Addr().String() + "/api/channels/bad..name")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad channel: %s", resp.Status)
	}
}

// TestChannelInfoNeedsWatch: with auth on, /api/channels/{channel} needs
// the watch permission.
func TestChannelInfoNeedsWatch(t *testing.T) {
	t.Parallel()
	e, keys := startAuthEnv(t, nil, controlOpts(0, 1024))
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+e.srv.Addr().String()+"/api/channels/dev.1", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(""); got != http.StatusUnauthorized {
		t.Errorf("no token: %d", got)
	}
	if got := get(keys.Token(t, "s", auth.Permissions{Send: []string{"dev.1"}}, time.Hour)); got != http.StatusForbidden {
		t.Errorf("send-only token: %d", got)
	}
	if got := get(keys.Token(t, "w", auth.Permissions{Watch: []string{"dev.*"}}, time.Hour)); got != http.StatusOK {
		t.Errorf("watch token: %d", got)
	}
}

// TestSendersEvent: an envelope client of a control channel is told the
// sender count when it joins and each time it changes; a plain client and
// an envelope client of another channel are not.
func TestSendersEvent(t *testing.T) {
	t.Parallel()
	e := startEnv(t, controlOpts(0, 1024))
	announce := func(channel, pod string, n int) {
		b, _ := json.Marshal(subjects.Presence{Pod: pod, Senders: n, TTLMillis: time.Hour.Milliseconds()})
		if err := e.pub.Publish("relay.ev."+channel, b); err != nil {
			t.Fatal(err)
		}
		e.flush()
	}
	announce("dev.e", "a", 1)
	eventually(t, 10*time.Second, func() error {
		if n := e.srv.presence.senders("dev.e"); n != 1 {
			return fmt.Errorf("%d senders", n)
		}
		return nil
	})
	env := e.dialProto("dev.e", SubprotocolJSON)
	plain := e.dial("dev.e", nil)
	other := e.dialProto("other", SubprotocolJSON)
	expect := func(want string) {
		t.Helper()
		if _, b := read(t, env, 10*time.Second); string(b) != want {
			t.Fatalf("got %s, want %s", b, want)
		}
	}
	expect(`{"event":"senders","count":1}`)
	announce("dev.e", "b", 2)
	expect(`{"event":"senders","count":3}`)
	announce("dev.e", "a", 0)
	expect(`{"event":"senders","count":2}`)
	announce("other", "a", 5)
	e.publish("dev.e", []byte("m"))
	e.publish("other", []byte("m"))
	for name, c := range map[string]*websocket.Conn{"plain": plain, "other channel": other} {
		if _, b := read(t, c, 10*time.Second); strings.Contains(string(b), "event") {
			t.Errorf("%s client got %s", name, b)
		}
	}
}
