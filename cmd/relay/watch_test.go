package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
)

// startWatch runs `relay watch args...` in the background.
func startWatch(t *testing.T, env []string, args ...string) *watchProc {
	t.Helper()
	cmd := exec.Command(relayBin, append([]string{"watch"}, args...)...)
	cmd.Env = append(cmd.Environ(), env...)
	w := &watchProc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.stdout, w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-w.done })
	return w
}

type watchProc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

func (w *watchProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("relay watch did not exit; stderr:\n%s", w.stderr.String())
	}
	return w.cmd.ProcessState.ExitCode()
}

// waitClients waits until the fanout at httpAddr has n WebSocket clients.
func waitClients(t *testing.T, httpAddr string, n int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(metricsText(t, "http://"+httpAddr+"/metrics"), fmt.Sprintf("relay_fanout_connections %d", n)) {
			return fmt.Errorf("waiting for %d WebSocket clients", n)
		}
		return nil
	})
}

// TestWatchRefusalReasons: a refused upgrade shows the server's reason from
// the response body, and exits 3 (trying again unchanged will not help).
func TestWatchRefusalReasons(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ws://" + r.http + "/ws/bad!name"}, 3, "400 Bad Request: invalid channel name"},
		{[]string{"--origin", "https://evil.example", "ws://" + r.http + "/ws/ok"}, 3, "403 Forbidden: origin not allowed"},
		{[]string{"ws://" + freePort(t) + "/ws/ok"}, 1, "connection refused"},
	}
	for _, tt := range tests {
		_, errb, code := runBin(t, "", nil, append([]string{"watch"}, tt.args...)...)
		if code != tt.code || !strings.Contains(errb, tt.want) {
			t.Errorf("relay watch %v: exit %d, stderr %q; want %d and %q", tt.args, code, errb, tt.code, tt.want)
		}
	}
}

// closer is a WebSocket server that closes each connection with the codes
// given in order (0: send "hello" and stay open), and records the
// Authorization header of each.
type closer struct {
	mu    sync.Mutex
	codes []websocket.StatusCode
	auth  []string
}

func (c *closer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	c.mu.Lock()
	n := len(c.auth)
	c.auth = append(c.auth, r.Header.Get("Authorization"))
	code := websocket.StatusCode(0)
	if n < len(c.codes) {
		code = c.codes[n]
	}
	c.mu.Unlock()
	if code != 0 {
		conn.Close(code, "reason "+strconv.Itoa(int(code)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	conn.Write(ctx, websocket.MessageText, []byte("hello"))
	conn.Read(ctx) // until the client leaves
}

func (c *closer) connections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.auth)
}

// TestWatchCloseCodes: the server's close code and reason are printed with
// their meaning; the exit status tells a refusal (3) from a failure (1); the
// token travels as Authorization: Bearer and is never printed.
func TestWatchCloseCodes(t *testing.T) {
	t.Parallel()
	const secret = "tok.en-secret_1"
	tests := []struct {
		code websocket.StatusCode
		exit int
		want string
	}{
		{1000, 0, "1000 reason 1000 (normal closure)"},
		{1001, 0, "1001 reason 1001 (server going away)"},
		{1008, 1, "1008 reason 1008 (policy violation: fell behind (slow consumer), data missed)"},
		{1012, 1, "1012 reason 1012 (service restart: fanout lost NATS, data may be missed)"},
		{4429, 1, "4429 reason 4429 (over a rate or connection limit)"},
		{4400, 3, "4400 reason 4400 (bad request)"},
		{4401, 3, "4401 reason 4401 (no token, or an invalid or expired token)"},
		{4403, 3, "4403 reason 4403 (channel not permitted for this token)"},
		{1003, 3, "1003 reason 1003 (unsupported data: clients may not send data on this channel)"},
		{1009, 3, "1009 reason 1009 (message too big)"},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(int(tt.code)), func(t *testing.T) {
			t.Parallel()
			c := &closer{codes: []websocket.StatusCode{tt.code}}
			srv := httptest.NewServer(c)
			defer srv.Close()
			_, errb, code := runBin(t, "", []string{"RELAY_TOKEN=" + secret}, "watch", "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/x")
			if code != tt.exit || !strings.Contains(errb, "closed by server: "+tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb, tt.exit, tt.want)
			}
			if strings.Contains(errb, secret) {
				t.Errorf("stderr shows the token: %q", errb)
			}
			if c.auth[0] != "Bearer "+secret {
				t.Errorf("Authorization %q, want Bearer TOKEN", c.auth[0])
			}
		})
	}
}

// TestWatchReconnect: with --reconnect, relay watch connects again after
// 1001, 1008, 1012 and 4429, and not after 4401/4403 (exit 3 after one
// connection).
func TestWatchReconnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code  websocket.StatusCode
		again bool
	}{
		{1001, true}, {1008, true}, {1012, true}, {4429, true}, {4401, false}, {4403, false}, {4400, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(int(tt.code)), func(t *testing.T) {
			t.Parallel()
			c := &closer{codes: []websocket.StatusCode{tt.code}}
			srv := httptest.NewServer(c)
			defer srv.Close()
			out, errb, code := runBin(t, "", nil, "watch", "--reconnect", "--backoff-max", "1s", "-n", "1", "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/x")
			if tt.again {
				if code != 0 || out != "hello\n" || c.connections() != 2 || !strings.Contains(errb, "reconnected") {
					t.Fatalf("exit %d, stdout %q, %d connections, stderr %q; want a second connection and its message", code, out, c.connections(), errb)
				}
				return
			}
			if code != 3 || c.connections() != 1 || strings.Contains(errb, "reconnecting") {
				t.Fatalf("exit %d, %d connections, stderr %q; want exit 3 after one connection", code, c.connections(), errb)
			}
		})
	}
}

// TestWatchReconnectAcrossRestart: `relay watch --reconnect` survives the
// fanout going away (SIGTERM: 1001) and a restart, and gets messages from
// the new process.
func TestWatchReconnectAcrossRestart(t *testing.T) {
	t.Parallel()
	r := startAll(t, "RELAY_SHUTDOWN_GRACE=2s")
	w := startWatch(t, nil, "--reconnect", "--backoff-max", "1s", "-n", "2", "ws://"+r.http+"/ws/rc")
	waitClients(t, r.http, 1)
	if _, errb, code := runBin(t, "before\n", nil, "send", r.hs, "rc"); code != 0 {
		t.Fatal(errb)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if w.stdout.String() != "before\n" {
			return fmt.Errorf("stdout %q", w.stdout.String())
		}
		return nil
	})
	r.p.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("relay all exited %d", code)
	}
	// The same ports again.
	p2 := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + r.fixed + "=default/line," + r.hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + r.http, "RELAY_INGEST_HTTP_ADDR=127.0.0.1:0",
	}, "all")
	waitReady(t, "http://"+r.http+"/readyz")
	waitClients(t, r.http, 1)
	if _, errb, code := runBin(t, "after\n", nil, "send", r.hs, "rc"); code != 0 {
		t.Fatal(errb)
	}
	if code := w.wait(t); code != 0 || w.stdout.String() != "before\nafter\n" {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, w.stdout.String(), w.stderr.String())
	}
	if errb := w.stderr.String(); !strings.Contains(errb, "closed by server: 1001") || !strings.Contains(errb, "reconnected") {
		t.Fatalf("stderr:\n%s", errb)
	}
	_ = p2
}

// TestWatchJSON: --json prints one object per message (text as text, binary
// as base64), so a payload holding a newline is unambiguous.
func TestWatchJSON(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	w := startWatch(t, nil, "--json", "-n", "2", "ws://"+r.http+"/ws/j")
	waitClients(t, r.http, 1)
	if _, errb, code := runBin(t, "héllo\n", nil, "send", r.hs, "j"); code != 0 {
		t.Fatal(errb)
	}
	// len32 frames travel as binary; this one holds a newline and 0xff.
	if _, errb, code := runBin(t, "", nil, "send", r.hsLen32, "j", "--framing", "len32", "--template", "two\nlines\xff"); code != 0 {
		t.Fatal(errb)
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("exit %d, stderr %s", code, w.stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(w.stdout.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", w.stdout.String())
	}
	var text, bin struct {
		Time string  `json:"time"`
		Type string  `json:"type"`
		Size int     `json:"size"`
		Text *string `json:"text"`
		Data []byte  `json:"data"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &text); err != nil || text.Type != "text" || text.Size != 6 || text.Text == nil || *text.Text != "héllo" {
		t.Fatalf("line 1 %s: %+v %v", lines[0], text, err)
	}
	if _, err := time.Parse(time.RFC3339Nano, text.Time); err != nil {
		t.Fatalf("time %q: %v", text.Time, err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &bin); err != nil || bin.Type != "binary" || bin.Size != 10 || string(bin.Data) != "two\nlines\xff" || bin.Text != nil {
		t.Fatalf("line 2 %s: %+v %v", lines[1], bin, err)
	}
}
