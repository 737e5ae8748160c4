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
	"github.com/golang-jwt/jwt/v5"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/metrics"
	rtest "github.com/relaydev/relay/shared/testutil"
)

func startAuthEnv(t *testing.T, mod func(*auth.Options), edit func(*Options)) (*env, rtest.AuthKeys) {
	t.Helper()
	keys := rtest.NewAuthKeys(t)
	o := keys.Options(t)
	if mod != nil {
		mod(&o)
	}
	a, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, func(o *Options) {
		o.Auth = a
		if edit != nil {
			edit(o)
		}
	})
	return e, keys
}

// dialAuth opens channel with opts and returns the close status and reason
// the server sent first (0 when the connection stayed open and a message
// published on the channel arrived).
func (e *env) dialAuth(channel string, opts *websocket.DialOptions, path string) (websocket.StatusCode, string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if path == "" {
		path = "/ws/" + channel
	}
	c, resp, err := websocket.Dial(ctx, e.wsURL+path, opts)
	if err != nil {
		e.t.Fatalf("dial %s: %v (HTTP %v): an auth refusal must complete the upgrade", path, err, resp)
	}
	defer c.CloseNow()
	if resp.Header.Get("Sec-WebSocket-Protocol") != c.Subprotocol() || strings.Contains(resp.Header.Get("Sec-WebSocket-Protocol"), "bearer") {
		e.t.Fatalf("server selected %q", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	// Allowed: a message published now arrives. Refused: the close comes first.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			e.pub.Publish("relay.ch."+channel, []byte("hello"))
			e.pub.Flush()
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	_, b, err := c.Read(ctx)
	close(stop)
	<-done
	if err == nil {
		if string(b) != "hello" {
			e.t.Fatalf("got %q", b)
		}
		return 0, ""
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		e.t.Fatalf("read: %v, want a close frame", err)
	}
	return ce.Code, ce.Reason
}

// TestWatchPermissionMatrix: each claim against the watch edge, with public
// patterns, through each place a token may travel.
func TestWatchPermissionMatrix(t *testing.T) {
	t.Parallel()
	e, keys := startAuthEnv(t, func(o *auth.Options) { o.PublicWatch = []string{"public.>"} }, nil)
	tok := func(p auth.Permissions) string { return keys.Token(t, "viewer", p, time.Hour) }
	forbidden := "forbidden: no watch permission for this channel"
	bearer := func(tok string) *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}}
	}
	for _, c := range []struct {
		name, channel string
		opts          *websocket.DialOptions
		code          websocket.StatusCode
		reason        string
	}{
		{"watch claim, header", "sensors.room1", bearer(tok(auth.Permissions{Watch: []string{"sensors.*"}})), 0, ""},
		{"watch claim, subprotocol", "sensors.room1", &websocket.DialOptions{Subprotocols: []string{"relay.v1", "relay.bearer." + tok(auth.Permissions{Watch: []string{"sensors.>"}})}}, 0, ""},
		{"watch claim, cookie", "sensors.room1", &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"relay_token=" + tok(auth.Permissions{Watch: []string{">"}})}}}, 0, ""},
		{"watch claim, other channel", "payroll", bearer(tok(auth.Permissions{Watch: []string{"sensors.*"}})), StatusForbidden, forbidden},
		{"send claim only", "sensors.room1", bearer(tok(auth.Permissions{Send: []string{">"}})), StatusForbidden, forbidden},
		{"control claim only", "sensors.room1", bearer(tok(auth.Permissions{Control: []string{">"}})), StatusForbidden, forbidden},
		{"public pattern, no token", "public.board", nil, 0, ""},
		{"public pattern, token without watch", "public.board", bearer(tok(auth.Permissions{Send: []string{">"}})), 0, ""},
		{"no token", "sensors.room1", nil, StatusUnauthorized, "unauthorized: token required"},
		{"expired", "sensors.room1", bearer(expiredToken(t, keys)), StatusUnauthorized, "unauthorized: token expired"},
		{"wrong key", "sensors.room1", bearer(wrongKeyToken(t)), StatusUnauthorized, "unauthorized: token signature invalid"},
		{"bearer subprotocol without relay.v1 is still read", "sensors.room1", &websocket.DialOptions{Subprotocols: []string{"relay.v1", "relay.bearer.nope"}}, StatusUnauthorized, "unauthorized: malformed token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, reason := e.dialAuth(c.channel, c.opts, "")
			if code != c.code || reason != c.reason {
				t.Fatalf("close %d %q, want %d %q", code, reason, c.code, c.reason)
			}
		})
	}
	if n := val(e.m.AuthRefused.With(metrics.AuthRefusal("forbidden"))); n != 3 {
		t.Errorf("relay_auth_refused_total{tier=fanout,reason=forbidden} = %v, want 3", n)
	}
	if n := val(e.m.Refused.With(refusedUnauthorized)); n != 4 {
		t.Errorf("relay_fanout_refused_total{reason=unauthorized} = %v, want 4", n)
	}
}

func expiredToken(t *testing.T, keys rtest.AuthKeys) string {
	tok, err := auth.Mint(keys.HMAC, auth.MintOptions{Subject: "old", Permissions: auth.Permissions{Watch: []string{">"}},
		TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wrongKeyToken(t *testing.T) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Relay:            &auth.Permissions{Watch: []string{">"}},
	}).SignedString([]byte(strings.Repeat("w", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestQueryToken: ?token= is refused with a reason unless enabled.
func TestQueryToken(t *testing.T) {
	t.Parallel()
	off, keys := startAuthEnv(t, nil, nil)
	tok := keys.Token(t, "q", auth.Permissions{Watch: []string{">"}}, time.Hour)
	code, reason := off.dialAuth("a", nil, "/ws/a?token="+tok)
	if code != StatusUnauthorized || reason != auth.ErrQueryTokenOff.Text {
		t.Fatalf("query token while disabled: %d %q", code, reason)
	}
	on, keys := startAuthEnv(t, nil, func(o *Options) { o.QueryToken = true })
	tok = keys.Token(t, "q", auth.Permissions{Watch: []string{">"}}, time.Hour)
	if code, reason := on.dialAuth("a", nil, "/ws/a?token="+tok); code != 0 {
		t.Fatalf("query token enabled: %d %q", code, reason)
	}
}

// TestTokenExpiryClosesReceiver: a connected receiver is closed with 4401
// "token expired" at its token's exp.
func TestTokenExpiryClosesReceiver(t *testing.T) {
	t.Parallel()
	e, keys := startAuthEnv(t, func(o *auth.Options) { o.ClockSkew = 0 }, nil)
	tok := keys.Token(t, "brief", auth.Permissions{Watch: []string{"x"}}, 2*time.Second)
	c := e.dial("x", http.Header{"Authorization": {"Bearer " + tok}})
	e.publish("x", []byte("before"))
	if _, b := read(t, c, 10*time.Second); string(b) != "before" {
		t.Fatalf("got %q", b)
	}
	_, err := readErr(c, 20*time.Second)
	if code := websocket.CloseStatus(err); code != StatusUnauthorized || !strings.Contains(err.Error(), "token expired") {
		t.Fatalf("after exp: %v, want 4401 token expired", err)
	}
	eventually(t, 10*time.Second, func() error {
		if n := val(e.m.Disconnects.With(disconnectTokenExpired)); n != 1 {
			return errf("disconnects{token_expired} = %v", n)
		}
		if n := val(e.m.AuthRefused.With(metrics.AuthRefusal("expired"))); n != 1 {
			return errf("auth_refused{expired} = %v", n)
		}
		return nil
	})
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
