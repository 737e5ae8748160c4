package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// relayAll is a `relay all` process with one listener of each kind.
type relayAll struct {
	fixed, hs, hsLen32, hsRaw, http string
	p                               *proc
}

func startAll(t *testing.T, env ...string) relayAll {
	t.Helper()
	r := relayAll{fixed: freePort(t), hs: freePort(t), hsLen32: freePort(t), hsRaw: freePort(t), http: freePort(t)}
	ingestHTTP := freePort(t)
	r.p = startRelay(t, append([]string{
		"RELAY_INGEST_LISTENERS=" + r.fixed + "=default/line," + r.hs + "=*/line," + r.hsLen32 + "=*/len32," + r.hsRaw + "=*/raw",
		"RELAY_FANOUT_ADDR=" + r.http,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
	}, env...), "all")
	waitReady(t, "http://"+r.http+"/readyz", "http://"+ingestHTTP+"/readyz")
	return r
}

// waitMessages waits until the receiver holds exactly want, in order.
func waitMessages(t *testing.T, ws *wsReceiver, want ...string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := ws.messages(); !slices.Equal(got, want) {
			return fmt.Errorf("received %q, want %q", got, want)
		}
		return nil
	})
}

// TestSendExitStatus: relay send exits 0 when the server took everything —
// also without CHANNEL on a handshake listener, where the server's +OK
// answers the user's own first line — and 1, with the server's reason, only
// when the server refused something.
func TestSendExitStatus(t *testing.T) {
	t.Parallel()
	r := startAll(t, "RELAY_INGEST_MAX_MESSAGE=100")
	inl := dialWS(t, "ws://"+r.http+"/ws/inl")
	def := dialWS(t, "ws://"+r.http+"/ws/default")

	// The command: the first line names the channel itself.
	if _, errb, code := runBin(t, "inl\na\nb\n", nil, "send", r.hs); code != 0 || errb != "" {
		t.Fatalf("printf 'inl\\na\\nb\\n' | relay send HANDSHAKE: exit %d, stderr %q", code, errb)
	}
	waitMessages(t, inl, "a", "b")
	if _, errb, code := runBin(t, "c\n", nil, "send", r.hs, "inl", "--token", "some.token"); code != 0 || errb != "" {
		t.Fatalf("relay send HANDSHAKE inl --token: exit %d, stderr %q", code, errb)
	}
	if _, errb, code := runBin(t, "1\n2\n", nil, "send", r.fixed); code != 0 || errb != "" {
		t.Fatalf("relay send FIXED: exit %d, stderr %q", code, errb)
	}
	waitMessages(t, inl, "a", "b", "c")
	waitMessages(t, def, "1", "2")

	refusals := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"bad channel", "x\n", []string{"send", r.hs, "bad!"}, "refused by server: bad handshake"},
		{"bad first line, no CHANNEL", "bad!\nx\n", []string{"send", r.hs}, "is a handshake listener: give CHANNEL"},
		{"empty stdin, no CHANNEL", "", []string{"send", r.hs}, "is a handshake listener: give CHANNEL"},
		{"too large", strings.Repeat("z", 200) + "\n", []string{"send", r.fixed}, "refused by server: message too large"},
		{"nothing listening", "x\n", []string{"send", freePort(t)}, "connection refused"},
	}
	for _, tt := range refusals {
		if _, errb, code := runBin(t, tt.stdin, nil, tt.args...); code != 1 || !strings.Contains(errb, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", tt.name, code, errb, tt.want)
		}
	}
	waitMessages(t, def, "1", "2") // the refused line was not delivered
}

// TestSendChannelToFixedListenerFailsFast: CHANNEL given to a fixed listener
// (which takes no handshake) fails within the 3 s handshake wait, not the
// 10 s connect timeout, and says what is likely wrong.
func TestSendChannelToFixedListenerFailsFast(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	start := time.Now()
	_, errb, code := runBin(t, "y\n", nil, "send", r.fixed, "sensors")
	took := time.Since(start)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, errb)
	}
	for _, want := range []string{"no +OK within 3s", "fixed listener", "drop CHANNEL"} {
		if !strings.Contains(errb, want) {
			t.Errorf("stderr %q does not say %q", errb, want)
		}
	}
	// Generous bound (the wait is 3 s); the old behaviour took 10 s.
	if took > 9*time.Second {
		t.Errorf("took %s", took)
	}
	// With a token the line carried it: say so, without printing it.
	_, errb, code = runBin(t, "y\n", []string{"RELAY_TOKEN=tok-secret"}, "send", r.fixed, "sensors")
	if code != 1 || !strings.Contains(errb, "consider the token exposed") || strings.Contains(errb, "tok-secret") {
		t.Errorf("with a token: exit %d, stderr %q", code, errb)
	}
}

// TestSendFramingCountRate: --framing matches len32 and raw listeners,
// --count/--template generate messages, --rate paces them.
func TestSendFramingCountRate(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	ws := dialWS(t, "ws://"+r.http+"/ws/f")
	raw := dialWS(t, "ws://"+r.http+"/ws/r")

	runOK := func(stdin string, args ...string) {
		t.Helper()
		if _, errb, code := runBin(t, stdin, nil, append([]string{"send"}, args...)...); code != 0 {
			t.Fatalf("relay send %v: exit %d, stderr %q", args, code, errb)
		}
	}
	runOK("one\ntwo\n", "--framing", "len32", r.hsLen32, "f")
	waitMessages(t, ws, "one", "two")
	runOK("", r.hs, "f", "--count", "3", "--template", "msg {{.N}}")
	waitMessages(t, ws, "one", "two", "msg 1", "msg 2", "msg 3")
	runOK("", r.hsLen32, "f", "--framing", "len32", "--count", "2", "--template", "{{.N}}\n{{.N}}")
	waitMessages(t, ws, "one", "two", "msg 1", "msg 2", "msg 3", "1\n1", "2\n2")
	runOK("", r.hsRaw, "r", "--framing", "raw", "--template", "raw bytes")
	waitMessages(t, raw, "raw bytes")

	// A mismatch is refused by the server, not delivered as garbage.
	if _, errb, code := runBin(t, "", nil, "send", r.hsLen32, "f", "--count", "1", "--template", "0123456789"); code != 1 || !strings.Contains(errb, "refused by server") {
		t.Errorf("line framing to a len32 listener: exit %d, stderr %q", code, errb)
	}

	// 5 messages at 20/s take at least 4 gaps of 50 ms (a lower bound holds
	// however busy the machine is).
	start := time.Now()
	runOK("", r.hs, "f", "--count", "5", "--rate", "20", "--template", "paced {{.N}}")
	if took := time.Since(start); took < 180*time.Millisecond {
		t.Errorf("5 messages at --rate 20 took %s, want at least 200ms", took)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := ws.messages(); len(got) < 12 || got[11] != "paced 5" {
			return fmt.Errorf("received %q", got)
		}
		return nil
	})
}

// tokenServer is a handshake peer on a real socket that records each
// handshake line and answers it with reply.
func tokenServer(t *testing.T, reply string) (addr string, lines <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			got <- strings.TrimSuffix(line, "\n")
			io.WriteString(c, reply)
			io.Copy(io.Discard, br)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String(), got
}

// TestSendToken: the token from --token, --token-file or RELAY_TOKEN goes
// into the handshake line `CHANNEL TOKEN` and is never printed, even when
// the server's refusal quotes it.
func TestSendToken(t *testing.T) {
	t.Parallel()
	const secret = "eyJhbGciOi.secret-part_42"
	addr, lines := tokenServer(t, "+OK\n")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"send", addr, "ch", "--token", secret}},
		{[]string{"RELAY_TOKEN=" + secret}, []string{"send", addr, "ch"}},
		{nil, []string{"send", "--token-file", file, addr, "ch"}},
	} {
		if _, errb, code := runBin(t, "data\n", tc.env, tc.args...); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, code, errb)
		}
		if line := <-lines; line != "ch "+secret {
			t.Fatalf("%v: handshake line %q, want \"ch TOKEN\"", tc.args, line)
		}
	}

	refusing, _ := tokenServer(t, "-ERR unauthorized: token "+secret+" expired\n")
	_, errb, code := runBin(t, "data\n", []string{"RELAY_TOKEN=" + secret}, "send", refusing, "ch")
	if code != 1 || !strings.Contains(errb, "unauthorized") || strings.Contains(errb, "secret-part") {
		t.Fatalf("refused: exit %d, stderr %q (want 1, the reason, and no token)", code, errb)
	}
	_, errb, code = runBin(t, "", nil, "send", addr, "ch", "--token", "bad token "+secret)
	if code != 2 || strings.Contains(errb, "secret-part") {
		t.Fatalf("bad token: exit %d, stderr %q (want 2 and no token)", code, errb)
	}
}

// TestSendInteractive: with stdin still open (a terminal, a pipe from a
// long-running program) each line is sent when it is typed, in every mode,
// not when a buffer fills or stdin ends.
func TestSendInteractive(t *testing.T) {
	t.Parallel()
	r := startAll(t)
	for _, tc := range []struct {
		channel string
		args    []string
	}{
		{"i1", []string{r.hs, "i1"}},
		{"i2", []string{"--framing", "len32", r.hsLen32, "i2"}},
		{"i3", []string{"--rate", "1000", r.hs, "i3"}},
	} {
		ws := dialWS(t, "ws://"+r.http+"/ws/"+tc.channel)
		cmd := exec.Command(relayBin, append([]string{"send"}, tc.args...)...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errb syncBuffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(stdin, "typed\n")
		waitMessages(t, ws, "typed") // stdin is still open
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v, stderr %q", tc.args, err, errb.String())
		}
	}
}
