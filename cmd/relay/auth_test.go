package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
)

// authRelay is `relay all` with RELAY_AUTH=jwt at debug log level, and
// everything it wrote to a peer, so the leak check can look at all of it.
type authRelay struct {
	p                   *proc
	keys                testutil.AuthKeys
	fixed, hs, httpAddr string
	base, ws            string

	mu      sync.Mutex
	written []string // replies, close reasons and response headers relay sent
}

func startAuthRelay(t *testing.T, extra ...string) *authRelay {
	t.Helper()
	keys := testutil.NewAuthKeys(t)
	r := &authRelay{keys: keys, fixed: freePort(t), hs: freePort(t), httpAddr: freePort(t)}
	ingestHTTP := freePort(t)
	env := append([]string{
		"RELAY_AUTH=jwt",
		"RELAY_AUTH_HMAC_SECRET_FILE=" + keys.HMACFile,
		"RELAY_AUTH_PUBLIC_KEYS_FILE=" + keys.PublicFile,
		"RELAY_AUTH_PUBLIC_WATCH=public.>",
		"RELAY_AUTH_CLOCK_SKEW=0s",
		"RELAY_LOG_LEVEL=debug",
		"RELAY_INGEST_LISTENERS=" + r.fixed + "=public.board/line;public," + r.hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + r.httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_SHUTDOWN_GRACE=5s",
	}, extra...)
	r.p = startRelay(t, env, "all")
	waitReady(t, "http://"+r.httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")
	r.base, r.ws = "http://"+r.httpAddr, "ws://"+r.httpAddr
	return r
}

func (r *authRelay) wrote(s string) {
	r.mu.Lock()
	r.written = append(r.written, s)
	r.mu.Unlock()
}

// mint runs `relay token` (with the HMAC secret from the environment, or
// --key) and returns the token it printed.
func (r *authRelay) mint(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(relayBin, append([]string{"token"}, args...)...)
	cmd.Env = append(cmd.Environ(), "RELAY_AUTH_HMAC_SECRET_FILE="+r.keys.HMACFile)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("relay token %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// handshake opens a TCP sender like nc does: the line, then data; it returns
// the first reply line and the connection.
func (r *authRelay) handshake(t *testing.T, line, data string) (string, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.hs, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "%s\n%s", line, data)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	reply, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("handshake %q: %v", strings.Fields(line)[0], err)
	}
	r.wrote(reply)
	return strings.TrimSpace(reply), c, br
}

// watch opens /ws/channel with opts; it returns the connection, or the close
// status and reason the server refused it with.
func (r *authRelay) watch(t *testing.T, path string, opts *websocket.DialOptions) (*websocket.Conn, websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, r.ws+path, opts)
	if err != nil {
		t.Fatalf("dial %s: %v (a refusal must complete the upgrade)", path, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	r.wrote(fmt.Sprint(resp.Header))
	// A refused upgrade closes at once; an allowed one stays open. Tell them
	// apart by what arrives first: a close, or the probe published below.
	return c, 0, ""
}

// closeOf reads c until it closes and returns the close status and reason.
func (r *authRelay) closeOf(t *testing.T, c *websocket.Conn) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("read: %v, want a close frame", err)
		}
		r.wrote(ce.Reason)
		return ce.Code, ce.Reason
	}
}

func readMsg(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// TestAuthEndToEnd runs the built binary with RELAY_AUTH=jwt: tokens minted
// by `relay token` (HS256, and ES256 with --key) let a raw TCP sender send
// and WebSocket receivers watch, through each place a token may travel; each
// refusal gets its exact reply on both edges; tokens end their connections at
// exp on both edges; and, at debug log level, no token appears in anything
// relay wrote: logs, metrics, replies, close reasons or response headers.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	r := startAuthRelay(t)
	sendTok := r.mint(t, "--send", "sensors.>", "--sub", "device-7", "--ttl", "1h")
	watchTok := r.mint(t, "--watch", "sensors.*", "--sub", "viewer", "--ttl", "1h", "--key", r.keys.ECPrivateFile)
	shortSend := r.mint(t, "--send", "short", "--sub", "brief-sender", "--ttl", "3s")
	shortWatch := r.mint(t, "--watch", "short", "--sub", "brief-viewer", "--ttl", "3s")
	noWatch := r.mint(t, "--send", ">", "--sub", "sender-only")
	tokens := []string{sendTok, watchTok, shortSend, shortWatch, noWatch}

	// Receivers: each way a token may travel.
	bearer, _, _ := r.watch(t, "/ws/sensors.room1", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + watchTok}}})
	sub, _, _ := r.watch(t, "/ws/sensors.room1", &websocket.DialOptions{Subprotocols: []string{"relay.v1", "relay.bearer." + watchTok}})
	if sub.Subprotocol() != "relay.v1" {
		t.Fatalf("server selected subprotocol %q, want relay.v1", sub.Subprotocol())
	}
	cookie, _, _ := r.watch(t, "/ws/sensors.room1", &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"relay_token=" + watchTok}}})
	public, _, _ := r.watch(t, "/ws/public.board", nil)

	// A sender like nc: handshake with the token, then lines.
	reply, c, _ := r.handshake(t, "sensors.room1 "+sendTok, "21.5\n22.0\n")
	if reply != "+OK" {
		t.Fatalf("handshake with a send token: %q", reply)
	}
	c.(*net.TCPConn).CloseWrite()
	for name, ws := range map[string]*websocket.Conn{"bearer": bearer, "subprotocol": sub, "cookie": cookie} {
		if a, b := readMsg(t, ws), readMsg(t, ws); a != "21.5" || b != "22.0" {
			t.Fatalf("%s receiver got %q %q", name, a, b)
		}
	}
	if err := sendRaw(r.fixed, "", "on the public board\n"); err != nil {
		t.Fatalf("public fixed listener: %v", err)
	}
	if m := readMsg(t, public); m != "on the public board" {
		t.Fatalf("public receiver got %q", m)
	}

	// TCP refusals, exact replies.
	for _, c := range []struct{ line, want string }{
		{"sensors.room1", "-ERR unauthorized: token required"},
		{"sensors.room1 not.a.token", "-ERR unauthorized: malformed token"},
		{"payroll " + sendTok, "-ERR forbidden: no send permission for this channel"},
		{"sensors.room1 " + watchTok, "-ERR forbidden: no send permission for this channel"},
	} {
		if got, _, _ := r.handshake(t, c.line, ""); got != c.want {
			t.Errorf("handshake %q…: %q, want %q", strings.Fields(c.line)[0], got, c.want)
		}
	}
	// WebSocket refusals: the upgrade completes, then 4401/4403 + reason.
	for _, c := range []struct {
		path   string
		opts   *websocket.DialOptions
		code   websocket.StatusCode
		reason string
	}{
		{"/ws/sensors.room1", nil, 4401, "unauthorized: token required"},
		{"/ws/sensors.room1", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + noWatch}}}, 4403, "forbidden: no watch permission for this channel"},
		{"/ws/payroll", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + watchTok}}}, 4403, "forbidden: no watch permission for this channel"},
		{"/ws/sensors.room1?token=" + watchTok, nil, 4401, "unauthorized: ?token= is disabled; send the token as a header or subprotocol"},
	} {
		ws, _, _ := r.watch(t, c.path, c.opts)
		if code, reason := r.closeOf(t, ws); code != c.code || reason != c.reason {
			t.Errorf("%s: close %d %q, want %d %q", strings.Split(c.path, "?")[0], code, reason, c.code, c.reason)
		}
	}

	// Expiry ends live connections on both edges.
	shortWS, _, _ := r.watch(t, "/ws/short", &websocket.DialOptions{Subprotocols: []string{"relay.v1", "relay.bearer." + shortWatch}})
	reply, sc, sbr := r.handshake(t, "short "+shortSend, "before exp\n")
	if reply != "+OK" {
		t.Fatalf("short-lived sender: %q", reply)
	}
	if m := readMsg(t, shortWS); m != "before exp" {
		t.Fatalf("short-lived receiver got %q", m)
	}
	sc.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := sbr.ReadString('\n')
	r.wrote(line)
	if line != "-ERR token expired\n" {
		t.Errorf("sender at exp: %q %v, want -ERR token expired", line, err)
	}
	if code, reason := r.closeOf(t, shortWS); code != 4401 || reason != "token expired" {
		t.Errorf("receiver at exp: %d %q, want 4401 token expired", code, reason)
	}

	metrics := metricsText(t, r.base+"/metrics")
	for _, want := range []string{
		`relay_auth_refused_total{reason="missing",tier="ingest"} 1`,
		`relay_auth_refused_total{reason="forbidden",tier="ingest"} 2`,
		`relay_auth_refused_total{reason="invalid",tier="ingest"} 1`,
		`relay_auth_refused_total{reason="expired",tier="ingest"} 1`,
		`relay_auth_refused_total{reason="missing",tier="fanout"} 1`,
		`relay_auth_refused_total{reason="forbidden",tier="fanout"} 2`,
		`relay_auth_refused_total{reason="invalid",tier="fanout"} 1`,
		`relay_auth_refused_total{reason="expired",tier="fanout"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Logs name the holder and the channel.
	testutil.Eventually(t, 10*time.Second, func() error {
		logs := r.p.stderr.String()
		for _, want := range []string{"sub=device-7", "channel=sensors.room1", "sub=viewer", "sub=brief-viewer", "sub=sender-only"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("logs lack %s", want)
			}
		}
		return nil
	})

	r.mu.Lock()
	written := strings.Join(r.written, "\n")
	r.mu.Unlock()
	assertNoTokens(t, tokens, map[string]string{"logs": r.p.stderr.String(), "metrics": metrics, "replies": written})
}

// assertNoTokens fails if any token, or its signature alone, appears in
// any of the texts.
func assertNoTokens(t *testing.T, tokens []string, texts map[string]string) {
	t.Helper()
	for what, text := range texts {
		if text == "" {
			t.Errorf("%s: nothing to check", what)
		}
		for _, tok := range tokens {
			sig := tok[strings.LastIndex(tok, ".")+1:]
			if strings.Contains(text, tok) || strings.Contains(text, sig) {
				t.Errorf("a token appears in relay's %s", what)
			}
		}
	}
}

// TestAuthStartRefusals: relay refuses to start with an open fixed listener
// or an unreadable key under RELAY_AUTH=jwt, saying which and how to fix it.
func TestAuthStartRefusals(t *testing.T) {
	t.Parallel()
	keys := testutil.NewAuthKeys(t)
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"RELAY_AUTH_HMAC_SECRET_FILE=" + keys.HMACFile, "RELAY_INGEST_LISTENERS=127.0.0.1:0=default/line"},
			"fixed listener 127.0.0.1:0=default/line carries no token"},
		{[]string{"RELAY_AUTH_HMAC_SECRET_FILE=/nonexistent/secret", "RELAY_INGEST_LISTENERS=127.0.0.1:0=*/line"},
			"RELAY_AUTH_HMAC_SECRET_FILE: stat /nonexistent/secret: no such file"},
		{[]string{"RELAY_INGEST_LISTENERS=127.0.0.1:0=*/line"}, "RELAY_AUTH=jwt needs a key"},
	} {
		p := startRelay(t, append(c.env, "RELAY_AUTH=jwt", "RELAY_FANOUT_ADDR=127.0.0.1:0", "RELAY_INGEST_HTTP_ADDR="), "all")
		if code := p.wait(t, 30*time.Second); code != 2 || !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, p.stderr.String(), c.want)
		}
	}
}

// TestAuthOffWarns: with RELAY_AUTH=off and a listener beyond loopback,
// one WARN at start names what is open.
func TestAuthOffWarns(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	_, p, _ := strings.Cut(port, ":")
	fan, ingestHTTP := freePort(t), freePort(t)
	r := startRelay(t, []string{"RELAY_INGEST_LISTENERS=:" + p + "=default/line", "RELAY_FANOUT_ADDR=" + fan,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP}, "all")
	waitReady(t, "http://"+fan+"/readyz")
	logs := r.stderr.String()
	if n := strings.Count(logs, "RELAY_AUTH=off: anyone who reaches these listeners"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "send :"+p+"=default/line") || strings.Contains(logs, "watch every channel") {
		t.Fatalf("warning does not name exactly the open listener:\n%s", logs)
	}
}

// TestTokenUsageErrors: relay token refuses what would mint a useless or
// unsigned token, naming the problem.
func TestTokenUsageErrors(t *testing.T) {
	t.Parallel()
	keys := testutil.NewAuthKeys(t)
	env := []string{"RELAY_AUTH_HMAC_SECRET_FILE=" + keys.HMACFile}
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{env, []string{"token", "--sub", "x"}, "give at least one of --send, --watch, --control"},
		{env, []string{"token", "--watch", "a", "--ttl", "0s"}, "--ttl must be positive"},
		{env, []string{"token", "--watch", "a.>.b"}, "'>' must be the last token"},
		{[]string{"RELAY_AUTH_HMAC_SECRET_FILE="}, []string{"token", "--watch", "a"}, "no key"},
		{env, []string{"token", "--watch", "a", "--key", keys.PublicFile}, "is not a private key"},
	} {
		out, errOut, code := runBin(t, "", c.env, c.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("relay %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errOut, c.want)
		}
	}
}

// TestBenchWithTokens: relay bench against a spawned relay with
// RELAY_AUTH=jwt mints a token with the configured secret (HS256) or
// --token-key (ES256) and its senders and receivers get through.
func TestBenchWithTokens(t *testing.T) {
	keys := testutil.NewAuthKeys(t)
	env := []string{"RELAY_AUTH=jwt", "RELAY_AUTH_HMAC_SECRET_FILE=" + keys.HMACFile, "RELAY_AUTH_PUBLIC_KEYS_FILE=" + keys.PublicFile}
	for _, extra := range [][]string{nil, {"--token-key", keys.ECPrivateFile}} {
		args := append(append([]string{"bench", "--spawn"}, benchShort...), extra...)
		out, errOut, code := runBin(t, "", env, args...)
		if code != 0 {
			t.Fatalf("relay %v: exit %d: %s", args, code, errOut)
		}
		var rep benchReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if r := rep.Runs[0]; r.Deliveries == 0 || r.Lost != 0 {
			t.Fatalf("relay %v: run %+v", args, r)
		}
	}
	_, errOut, code := runBin(t, "", []string{"RELAY_AUTH=jwt", "RELAY_AUTH_HMAC_SECRET_FILE=" + keys.HMACFile},
		append([]string{"bench", "--spawn", "--token", "not.a.token"}, benchShort...)...)
	if code == 0 || !strings.Contains(errOut, "unauthorized: malformed token") {
		t.Fatalf("bad token: exit %d, stderr %s", code, errOut)
	}
}
