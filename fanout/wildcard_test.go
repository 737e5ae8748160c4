package fanout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/metrics"
)

// Wildcard watchers get what NATS matches, each envelope naming the
// concrete channel, through one subscription per pattern on the pod however
// many watch it; a %-escaped '>' (as a browser sends it) works too.
func TestWildcardWatch(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	base := e.ns.NumSubscriptions()
	star := e.dialProto("sensors.*", SubprotocolJSON)
	star2 := e.dialProto("sensors.*", SubprotocolJSON)
	tail := e.dialProto("sensors.%3E", SubprotocolJSON)
	plain := e.dial("sensors.>", nil)
	exact := e.dialProto("sensors.a", SubprotocolJSON)
	if got := e.ns.NumSubscriptions(); got != base+3 {
		t.Errorf("NATS server has %d subscriptions for 5 watchers of 2 patterns and 1 channel, want %d", got-base, 3)
	}
	if got := val(e.m.Subscriptions); got != 3 {
		t.Errorf("Subscriptions gauge = %v, want 3", got)
	}
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Connections); got != 5 {
			return fmt.Errorf("Connections = %v, want 5 (a pattern watcher is one client)", got)
		}
		return nil
	})

	sent := []struct{ channel, data string }{
		{"sensors.a", "a1"}, {"other.a", "no"}, {"sensors.b", "b1"}, {"sensors.a.deep", "deep1"},
		{"sensors", "no"}, {"sensors.a", "a2"},
	}
	for _, m := range sent {
		e.publish(m.channel, []byte(m.data))
	}
	e.flush()

	expect := func(name string, c *websocket.Conn, want ...string) {
		t.Helper()
		for _, w := range want {
			ch, data, _ := strings.Cut(w, "=")
			_, b := read(t, c, 10*time.Second)
			env := decodeEnvelope(t, b)
			if env.Channel != ch || env.Data == nil || *env.Data != data {
				t.Errorf("%s: got %s, want channel %q data %q", name, b, ch, data)
			}
		}
	}
	expect("sensors.*", star, "sensors.a=a1", "sensors.b=b1", "sensors.a=a2")
	expect("sensors.* (second watcher)", star2, "sensors.a=a1", "sensors.b=b1", "sensors.a=a2")
	expect("sensors.>", tail, "sensors.a=a1", "sensors.b=b1", "sensors.a.deep=deep1", "sensors.a=a2")
	expect("sensors.a", exact, "sensors.a=a1", "sensors.a=a2")
	for _, want := range []string{"a1", "b1", "deep1", "a2"} {
		if _, b := read(t, plain, 10*time.Second); string(b) != want {
			t.Errorf("plain sensors.>: got %q, want %q", b, want)
		}
	}

	// Nothing else arrives: a marker on a matching channel comes next.
	e.publish("sensors.z", []byte("end"))
	e.flush()
	expect("sensors.* after", star, "sensors.z=end")
	expect("sensors.> after", tail, "sensors.z=end")

	for _, c := range []*websocket.Conn{star, star2, tail, plain, exact} {
		c.Close(websocket.StatusNormalClosure, "")
	}
	eventually(t, 20*time.Second, func() error {
		if got := e.ns.NumSubscriptions(); got != base {
			return fmt.Errorf("NATS server has %d subscriptions after all left, want %d", got, base)
		}
		return nil
	})
}

// Patterns are checked like channel names: a wildcard must be a whole
// token, '>' the last one. Refused with HTTP 400 before the upgrade.
func TestWildcardBadPatterns(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	for _, p := range []string{"sensors.>.a", "sensors*", "sensors.a>", "sensors.*.", "*..a", "%3E.x"} {
		_, err := e.tryDial(p, nil)
		if got := dialStatus(err); got != http.StatusBadRequest {
			t.Errorf("%s: %v, want HTTP 400", p, err)
		}
	}
	if n := val(e.m.Refused.With(refusedBadChannel)); n != 6 {
		t.Errorf("refused{bad_channel} = %v, want 6", n)
	}
}

// Resume parameters need one stream position: on a pattern they are a bad
// request, closed with 4400 after the upgrade (a browser cannot read an
// HTTP status).
func TestWildcardResumeRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	for _, q := range []string{"since=5", "last=10", "since_time=2026-12-03T00:00:00Z", "since="} {
		t.Run(q, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, e.wsURL+"/ws/sensors.*?"+q, nil)
			if err != nil {
				t.Fatalf("dial: %v (the refusal must complete the upgrade)", err)
			}
			defer c.CloseNow()
			_, _, err = c.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != statusPatternResume || ce.Reason != reasonResumePattern {
				t.Fatalf("read: %v, want close 4400 %q", err, reasonResumePattern)
			}
		})
	}
	if n := val(e.m.Refused.With(refusedBadRequest)); n != 4 {
		t.Errorf("refused{bad_request} = %v, want 4", n)
	}
}

// With auth on, a token's watch patterns must cover the requested pattern:
// sensors.* does not reach sensors.> (which also has sensors.a.b), and a
// public pattern covers only what it covers.
func TestWildcardPermissions(t *testing.T) {
	t.Parallel()
	e, keys := startAuthEnv(t, func(o *auth.Options) { o.PublicWatch = []string{"public.>"} }, nil)
	tok := func(p ...string) *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{
			"Authorization": {"Bearer " + keys.Token(t, "viewer", auth.Permissions{Watch: p}, time.Hour)}}}
	}
	forbidden := "forbidden: no watch permission for this channel"
	for _, c := range []struct {
		name, pattern, publish string
		opts                   *websocket.DialOptions
		code                   websocket.StatusCode
	}{
		{"same pattern", "sensors.*", "sensors.a", tok("sensors.*"), 0},
		{"wider pattern", "sensors.*", "sensors.a", tok("sensors.>"), 0},
		{"everything", "sensors.>", "sensors.a.b", tok(">"), 0},
		{"narrower pattern", "sensors.>", "sensors.a", tok("sensors.*"), StatusForbidden},
		{"one channel of it", "sensors.*", "sensors.a", tok("sensors.a", "sensors.b"), StatusForbidden},
		{"other subtree", "sensors.*", "sensors.a", tok("logs.>"), StatusForbidden},
		{"public covers", "public.*", "public.x", nil, 0},
		{"public does not cover", ">", "public.x", nil, StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, reason := e.dialAuth(c.publish, c.opts, "/ws/"+c.pattern)
			if code != c.code {
				t.Fatalf("close %d %q, want %d", code, reason, c.code)
			}
			if code == StatusForbidden && reason != forbidden {
				t.Fatalf("reason %q, want %q", reason, forbidden)
			}
		})
	}
	if n := val(e.m.AuthRefused.With(metrics.AuthRefusal("forbidden"))); n != 3 {
		t.Errorf("relay_auth_refused_total{reason=forbidden} = %v, want 3", n)
	}
}
