package ingest

import (
	"bufio"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/testutil"
)

func newAuth(t *testing.T, mod func(*auth.Options)) (*auth.Authenticator, testutil.AuthKeys) {
	t.Helper()
	keys := testutil.NewAuthKeys(t)
	o := keys.Options(t)
	if mod != nil {
		mod(&o)
	}
	a, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a, keys
}

// handshakeReply sends line and returns the server's first reply line.
func handshakeReply(t *testing.T, addr, line string) string {
	t.Helper()
	c := dial(t, addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "%s\n", line)
	return strings.TrimSuffix(readLine(t, c, br), "\n")
}

// TestSendPermissionMatrix: each claim against the send edge, with and
// without a public send pattern.
func TestSendPermissionMatrix(t *testing.T) {
	t.Parallel()
	a, keys := newAuth(t, func(o *auth.Options) { o.PublicSend = []string{"public.*"} })
	h := startIngestAuth(t, nil, defaultConfig("127.0.0.1:0=*/line"), a)
	tok := func(p auth.Permissions) string { return keys.Token(t, "dev", p, time.Hour) }
	forbidden := "-ERR forbidden: no send permission for this channel"
	for _, c := range []struct {
		name, token, channel, want string
	}{
		{"send claim, matching", tok(auth.Permissions{Send: []string{"sensors.>"}}), "sensors.room1", "+OK"},
		{"send claim, other channel", tok(auth.Permissions{Send: []string{"sensors.>"}}), "payroll", forbidden},
		{"send claim, * does not match two tokens", tok(auth.Permissions{Send: []string{"sensors.*"}}), "sensors.a.b", forbidden},
		{"watch claim only", tok(auth.Permissions{Watch: []string{">"}}), "sensors.room1", forbidden},
		{"control claim only", tok(auth.Permissions{Control: []string{">"}}), "sensors.room1", forbidden},
		{"no claim", tok(auth.Permissions{}), "sensors.room1", forbidden},
		{"public pattern, no token", "", "public.board", "+OK"},
		{"public pattern, token without send", tok(auth.Permissions{Watch: []string{">"}}), "public.board", "+OK"},
		{"public pattern does not cover deeper channels", "", "public.board.x", "-ERR unauthorized: token required"},
		{"no token", "", "sensors.room1", "-ERR unauthorized: token required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			line := c.channel
			if c.token != "" {
				line += " " + c.token
			}
			if got := handshakeReply(t, h.addr(0), line); got != c.want {
				t.Fatalf("reply %q, want %q", got, c.want)
			}
		})
	}
}

// TestHandshakeRefusals: every kind of bad token gets its exact -ERR line
// and is counted in relay_auth_refused_total by reason.
func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	a, keys := newAuth(t, func(o *auth.Options) { o.Issuer, o.Audience = "iss", "aud" })
	h := startIngestAuth(t, nil, defaultConfig("127.0.0.1:0=*/line"), a)
	perms := &auth.Permissions{Send: []string{">"}}
	sign := func(method jwt.SigningMethod, key any, mod func(*auth.Claims)) string {
		c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "dev", Issuer: "iss", Audience: jwt.ClaimStrings{"aud"},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}, Relay: perms}
		if mod != nil {
			mod(&c)
		}
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil)
	other := []byte(strings.Repeat("o", 32))
	cases := []struct {
		name, token, want string
		reason            auth.Reason
	}{
		{"no token", "", "-ERR unauthorized: token required", auth.ReasonMissing},
		{"malformed", "abc.def.ghi", "-ERR unauthorized: malformed token", auth.ReasonInvalid},
		{"alg none", none, "-ERR unauthorized: token algorithm not allowed", auth.ReasonInvalid},
		{"alg/key mismatch", sign(jwt.SigningMethodEdDSA, mustEd25519(), nil), "-ERR unauthorized: token algorithm not allowed", auth.ReasonInvalid},
		{"wrong key", sign(jwt.SigningMethodHS256, other, nil), "-ERR unauthorized: token signature invalid", auth.ReasonInvalid},
		{"expired", sign(jwt.SigningMethodHS256, keys.HMAC.Key, func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour)) }), "-ERR unauthorized: token expired", auth.ReasonExpired},
		{"not yet valid", sign(jwt.SigningMethodHS256, keys.HMAC.Key, func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), "-ERR unauthorized: token not valid yet", auth.ReasonInvalid},
		{"wrong iss", sign(jwt.SigningMethodHS256, keys.HMAC.Key, func(c *auth.Claims) { c.Issuer = "x" }), "-ERR unauthorized: token issuer not accepted", auth.ReasonInvalid},
		{"wrong aud", sign(jwt.SigningMethodHS256, keys.HMAC.Key, func(c *auth.Claims) { c.Audience = nil }), "-ERR unauthorized: token audience not accepted", auth.ReasonInvalid},
		{"forbidden", sign(jwt.SigningMethodES256, keys.EC.Key, func(c *auth.Claims) { c.Relay = &auth.Permissions{Send: []string{"other"}} }), "-ERR forbidden: no send permission for this channel", auth.ReasonForbidden},
	}
	for _, c := range cases {
		before := ptestutil.ToFloat64(h.m.AuthRefused.With(metrics.AuthRefusal(c.reason)))
		line := "sensors.room1"
		if c.token != "" {
			line += " " + c.token
		}
		if got := handshakeReply(t, h.addr(0), line); got != c.want {
			t.Errorf("%s: reply %q, want %q", c.name, got, c.want)
		}
		if got := ptestutil.ToFloat64(h.m.AuthRefused.With(metrics.AuthRefusal(c.reason))); got != before+1 {
			t.Errorf("%s: relay_auth_refused_total{reason=%s} went from %v to %v", c.name, c.reason, before, got)
		}
	}
	if got := handshakeReply(t, h.addr(0), "sensors.room1 "+sign(jwt.SigningMethodES256, keys.EC.Key, nil)); got != "+OK" {
		t.Fatalf("valid ES256 token: %q", got)
	}
}

// TestTokenExpiryEndsSender: a sender whose token expires is told
// "-ERR token expired" and closed; what it sent before was delivered.
func TestTokenExpiryEndsSender(t *testing.T) {
	t.Parallel()
	a, keys := newAuth(t, func(o *auth.Options) { o.ClockSkew = 0 })
	h := startIngestAuth(t, nil, defaultConfig("127.0.0.1:0=*/line"), a)
	sub := subscribe(t, h.srv, "relay.ch.exp")
	tok := keys.Token(t, "short-lived", auth.Permissions{Send: []string{"exp"}}, 2*time.Second)

	c := dial(t, h.addr(0))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "exp %s\nbefore\n", tok)
	if got := readLine(t, c, br); got != "+OK\n" {
		t.Fatalf("handshake: %q", got)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || string(m.Data) != "before" {
		t.Fatalf("before expiry: %v %v", m, err)
	}
	// Keep the connection idle past exp: the server ends it on its own.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := br.ReadString('\n')
	if err != nil || got != "-ERR token expired\n" {
		t.Fatalf("after expiry: %q, %v; want -ERR token expired", got, err)
	}
	expectClosed(t, c, br)
	if n := ptestutil.ToFloat64(h.m.AuthRefused.With(metrics.AuthExpired)); n != 1 {
		t.Fatalf("relay_auth_refused_total{reason=expired} = %v, want 1", n)
	}
}

// TestFixedListenerNeedsPublicUnderJWT: New refuses an unmarked fixed
// listener and names the fix; ;public runs without a token.
func TestFixedListenerNeedsPublicUnderJWT(t *testing.T) {
	t.Parallel()
	a, _ := newAuth(t, nil)
	_, err := New(Options{Config: defaultConfig("127.0.0.1:0=board/line"), SubjectPrefix: "relay",
		NATS: testutil.Connect(t, testutil.NATSServer(t)), Logger: testutil.Logger(t), Auth: a})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:0=board/line;public") {
		t.Fatalf("New = %v, want a refusal naming the listener and ;public", err)
	}
	h := startIngestAuth(t, nil, defaultConfig("127.0.0.1:0=board/line;public"), a)
	sub := subscribe(t, h.srv, "relay.ch.board")
	c := dial(t, h.addr(0))
	fmt.Fprintf(c, "anyone may post here\n")
	if m, err := sub.NextMsg(10 * time.Second); err != nil || string(m.Data) != "anyone may post here" {
		t.Fatalf("public fixed listener: %v %v", m, err)
	}
}

func mustEd25519() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
}
