package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/testutil"
)

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminAddrBinary: with RELAY_ADMIN_ADDR, metrics, health and pprof
// are served there and no longer on the public fanout address.
func TestAdminAddrBinary(t *testing.T) {
	t.Parallel()
	adminAddr, fan := freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + freePort(t) + "=default/line", "RELAY_INGEST_HTTP_ADDR=",
		"RELAY_FANOUT_ADDR=" + fan, "RELAY_ADMIN_ADDR=" + adminAddr, "RELAY_ADMIN_PPROF=true",
	}, "all")
	waitReady(t, "http://"+adminAddr+"/readyz")
	for path, want := range map[string]int{
		"http://" + adminAddr + "/healthz": 200, "http://" + adminAddr + "/metrics": 200, "http://" + adminAddr + "/debug/pprof/": 200,
		"http://" + fan + "/metrics": 404, "http://" + fan + "/healthz": 404, "http://" + fan + "/readyz": 404, "http://" + fan + "/": 200,
	} {
		if got := httpStatus(t, path); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	if _, errb, code := runBin(t, "", []string{"RELAY_ADMIN_PPROF=true"}, "config"); code != 2 || !strings.Contains(errb, "RELAY_ADMIN_PPROF=true needs RELAY_ADMIN_ADDR") {
		t.Errorf("pprof without an admin address: exit %d, %q", code, errb)
	}
}

// TestPerIPLimitsBinary runs the built binary, floods it from one address
// on both edges and counts what was refused and what the other address got
// through.
func TestPerIPLimitsBinary(t *testing.T) {
	t.Parallel()
	fixed, fan := freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line", "RELAY_INGEST_HTTP_ADDR=", "RELAY_FANOUT_ADDR=" + fan,
		"RELAY_INGEST_MAX_CONNECTIONS=20", "RELAY_INGEST_MAX_CONNECTIONS_PER_IP=5",
		"RELAY_FANOUT_MAX_CONNECTIONS_PER_IP=3",
	}, "all")
	waitReady(t, "http://"+fan+"/readyz")
	ws := dialWSFrom(t, "127.0.0.2", "ws://"+fan+"/ws/default")

	// Ingest: 30 connections from 127.0.0.1 — 5 held, 25 refused.
	refused := 0
	for range 30 {
		c := dialTCPFrom(t, "127.0.0.1", fixed)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if line, _ := bufio.NewReader(c).ReadString('\n'); line == "-ERR rate limited\n" {
			refused++
		}
	}
	if refused != 25 {
		t.Fatalf("%d of 30 connections from one address refused, want 25", refused)
	}
	sender := dialTCPFrom(t, "127.0.0.2", fixed)
	for i := range 100 {
		fmt.Fprintf(sender, "line %d\n", i)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := ws.count(); n != 100 {
			return fmt.Errorf("receiver on another address has %d of 100", n)
		}
		return nil
	})

	// Fanout: the third and fourth WebSocket from 127.0.0.2 close with 4429.
	dialWSFrom(t, "127.0.0.2", "ws://"+fan+"/ws/default")
	dialWSFrom(t, "127.0.0.2", "ws://"+fan+"/ws/default")
	over := dialWSFrom(t, "127.0.0.2", "ws://"+fan+"/ws/default")
	select {
	case <-over.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("a WebSocket over the per-address cap was not closed")
	}
	if over.status != 4429 {
		t.Fatalf("over the cap: close %d, want 4429", over.status)
	}
	// DNS rebinding: a foreign Host is refused on this loopback listener.
	req, _ := http.NewRequest("GET", "http://"+fan+"/", nil)
	req.Host = "rebind.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("Host rebind.example: %d, want 403", resp.StatusCode)
	}
}

// TestLockoutFindingBinary replays issue 13's first finding against the
// built binary: only RELAY_INGEST_MAX_CONNECTIONS=100 set, and 100 idle
// connections from one address on the fixed listener. That used to refuse
// every other sender; now the per-address cap follows the lowered process
// cap (half of it), so the flood holds 50 slots and another address still
// gets its lines through.
func TestLockoutFindingBinary(t *testing.T) {
	t.Parallel()
	fixed, fan := freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line", "RELAY_INGEST_HTTP_ADDR=", "RELAY_FANOUT_ADDR=" + fan,
		"RELAY_INGEST_MAX_CONNECTIONS=100",
	}, "all")
	waitReady(t, "http://"+fan+"/readyz")
	ws := dialWSFrom(t, "127.0.0.2", "ws://"+fan+"/ws/default")

	refused := 0
	for range 100 {
		c := dialTCPFrom(t, "127.0.0.1", fixed)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if line, _ := bufio.NewReader(c).ReadString('\n'); line == "-ERR rate limited\n" {
			refused++
		}
	}
	if refused != 50 {
		t.Fatalf("%d of 100 idle connections from one address refused, want 50 (per-address cap = half of 100)", refused)
	}
	sender := dialTCPFrom(t, "127.0.0.2", fixed)
	for i := range 100 {
		fmt.Fprintf(sender, "line %d\n", i)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := ws.count(); n != 100 {
			return fmt.Errorf("a sender on another address got %d of 100 lines through", n)
		}
		return nil
	})
}

// TestTLSBinary: the built binary serves wss and a tls ingest listener
// with certificates made here.
func TestTLSBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, "test CA")
	cert, key := ca.Issue(t, "relay")
	certFile, keyFile := testutil.WriteFile(t, dir, "tls.crt", cert), testutil.WriteFile(t, dir, "tls.key", key)
	tlsIn, fan := freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + tlsIn + "=default/line;tls", "RELAY_INGEST_HTTP_ADDR=", "RELAY_FANOUT_ADDR=" + fan,
		"RELAY_INGEST_TLS_CERT_FILE=" + certFile, "RELAY_INGEST_TLS_KEY_FILE=" + keyFile,
		"RELAY_FANOUT_TLS_CERT_FILE=" + certFile, "RELAY_FANOUT_TLS_KEY_FILE=" + keyFile,
	}, "all")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	testutil.Eventually(t, 30*time.Second, func() error {
		resp, err := client.Get("https://" + fan + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+fan+"/ws/default", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	c, err := tls.Dial("tcp", tlsIn, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "secret over tls\n")
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "secret over tls" {
		t.Fatalf("wss read: %q %v", b, err)
	}
}

// TestNATSAuthBinary: relay ingest and fanout authenticate to a NATS
// server with authorization (user + password file) and carry a message;
// a client without credentials cannot even connect.
func TestNATSAuthBinary(t *testing.T) {
	t.Parallel()
	allow := []string{"relay.>", "$JS.API.>", "_INBOX.>"}
	perms := &server.Permissions{Publish: &server.SubjectPermission{Allow: allow}, Subscribe: &server.SubjectPermission{Allow: allow}}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "relay", Password: "pa55", Permissions: perms}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected")
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("pa55\n"), 0o600)
	env := []string{"RELAY_NATS_URL=" + ns.ClientURL(), "RELAY_NATS_USER=relay", "RELAY_NATS_PASSWORD_FILE=" + pw}
	fixed, ingHTTP, fan := freePort(t), freePort(t), freePort(t)
	ing := startRelay(t, append(env, "RELAY_INGEST_LISTENERS="+fixed+"=default/line", "RELAY_INGEST_HTTP_ADDR="+ingHTTP), "ingest")
	startRelay(t, append(env, "RELAY_FANOUT_ADDR="+fan), "fanout")
	waitReady(t, "http://"+ingHTTP+"/readyz", "http://"+fan+"/readyz")
	ws := dialWS(t, "ws://"+fan+"/ws/default")
	c := dialTCPFrom(t, "127.0.0.1", fixed)
	fmt.Fprintf(c, "authorized\n")
	waitMessages(t, ws, "authorized")
	if strings.Contains(ing.stderr.String(), "pa55") {
		t.Fatal("the NATS password reached the log")
	}
}

func dialTCPFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialWSFrom is dialWS from a chosen source address.
func dialWSFrom(t *testing.T, src, url string) *wsReceiver {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	r, _ := dialWSOpts(t, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}})
	return r
}
