package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// bgProc is a relay send/watch process whose stdin the test writes.
type bgProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *syncBuffer
	stderr *syncBuffer
}

func startBG(t *testing.T, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{cmd: exec.Command(relayBin, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("relay %v stdout:\n%s\nstderr:\n%s", args, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// channelInfo reads GET /api/channels/{channel}.
func channelInfo(t *testing.T, fanout, channel string) (senders, watchers int) {
	t.Helper()
	return channelInfoB(fanout, channel)
}

func channelInfoB(fanout, channel string) (senders, watchers int) {
	resp, err := http.Get("http://" + fanout + "/api/channels/" + channel)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var ci struct{ Senders, Watchers int }
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ci) != nil {
		return -1, -1
	}
	return ci.Senders, ci.Watchers
}

func waitSenders(t *testing.T, fanout, channel string, want int) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if got, _ := channelInfo(t, fanout, channel); got != want {
			return fmt.Errorf("%s: %d senders, want %d", channel, got, want)
		}
		return nil
	})
}

// TestTalkBackEndToEnd runs the binary: `relay watch --talk` sends stdin
// lines, and `relay send` processes on line, len32 and raw handshake
// listeners print them; a sender of a channel that is not a control channel
// gets nothing, and its watcher's line is refused with 1003.
func TestTalkBackEndToEnd(t *testing.T) {
	t.Parallel()
	line, l32, raw, httpAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + line + "=*/line," + l32 + "=*/len32," + raw + "=*/raw",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=",
		"RELAY_CONTROL_CHANNELS=dev.>",
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz")

	senders := map[string]*bgProc{
		"line":  startBG(t, "send", "--timeout", "1m", line, "dev.7"),
		"len32": startBG(t, "send", "--timeout", "1m", "--framing", "len32", l32, "dev.7"),
		"raw":   startBG(t, "send", "--timeout", "1m", "--framing", "raw", raw, "dev.7"),
	}
	waitSenders(t, httpAddr, "dev.7", 3)

	watcher := startBG(t, "watch", "--talk", "ws://"+httpAddr+"/ws/dev.7")
	testutil.Eventually(t, 20*time.Second, func() error {
		if _, w := channelInfo(t, httpAddr, "dev.7"); w != 1 {
			return fmt.Errorf("%d watchers", w)
		}
		return nil
	})
	fmt.Fprintln(watcher.stdin, "reboot now")
	fmt.Fprintln(watcher.stdin, "status?")
	for framing, p := range senders {
		want := "reboot now\nstatus?\n"
		if framing == "raw" {
			want = "reboot nowstatus?"
		}
		testutil.Eventually(t, 20*time.Second, func() error {
			if got := p.stdout.String(); got != want {
				return fmt.Errorf("%s sender printed %q, want %q", framing, got, want)
			}
			return nil
		})
	}

	// The senders' own data still flows to the watcher.
	fmt.Fprintln(senders["line"].stdin, "temperature 21")
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(watcher.stdout.String(), "temperature 21") {
			return fmt.Errorf("watcher printed %q", watcher.stdout.String())
		}
		return nil
	})

	// Elsewhere client data is refused.
	other := startBG(t, "send", "--timeout", "1m", line, "plain")
	waitSenders(t, httpAddr, "plain", 1)
	w2 := startBG(t, "watch", "--talk", "ws://"+httpAddr+"/ws/plain")
	fmt.Fprintln(w2.stdin, "hello?")
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(w2.stderr.String(), "1003") {
			return fmt.Errorf("watch --talk on a plain channel: stderr %q", w2.stderr.String())
		}
		return nil
	})
	if got := other.stdout.String(); got != "" {
		t.Errorf("the plain channel's sender printed %q", got)
	}

	// Departures are counted.
	senders["line"].stdin.Close()
	senders["raw"].cmd.Process.Kill()
	waitSenders(t, httpAddr, "dev.7", 1)
}

// TestPresenceSurvivesFanoutRestart: split tiers; a fanout started after
// the senders connected learns their count at once: it asks
// (<prefix>.evq) and ingest answers with all its counts. The periodic
// refresh is set to 10 minutes here, so only the answer can explain it.
// Departures reach it too.
func TestPresenceSurvivesFanoutRestart(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	natsURL := "RELAY_NATS_URL=" + srv.ClientURL()
	hs, ingHTTP := freePort(t), freePort(t)
	startRelay(t, []string{natsURL, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingHTTP,
		"RELAY_PRESENCE_REFRESH=10m", "RELAY_CONTROL_CHANNELS=dev.>"}, "ingest")
	f1 := freePort(t)
	fan := startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + f1, "RELAY_CONTROL_CHANNELS=dev.>"}, "fanout")
	waitReady(t, "http://"+ingHTTP+"/readyz", "http://"+f1+"/readyz")

	a := startBG(t, "send", "--timeout", "1m", hs, "dev.9")
	startBG(t, "send", "--timeout", "1m", hs, "dev.9")
	waitSenders(t, f1, "dev.9", 2)

	// The fanout goes; a new one (another process, another port) starts
	// with no state and asks for the counts.
	fan.cmd.Process.Kill()
	fan.wait(t, 10*time.Second)
	f2 := freePort(t)
	startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + f2, "RELAY_CONTROL_CHANNELS=dev.>"}, "fanout")
	waitReady(t, "http://"+f2+"/readyz")
	waitSenders(t, f2, "dev.9", 2)

	a.stdin.Close()
	waitSenders(t, f2, "dev.9", 1)
}

// TestTalkBackPermission: with RELAY_AUTH=jwt, `relay watch --talk` with a
// watch-only token may watch but is closed with 4403 when it talks (exit 3),
// and nothing reaches the sender; with the control permission its line
// reaches the sender. /api/channels needs watch.
func TestTalkBackPermission(t *testing.T) {
	t.Parallel()
	r := startAuthRelay(t, "RELAY_CONTROL_CHANNELS=dev.>")
	sendTok := r.mint(t, "--send", "dev.>", "--ttl", "1h")
	sender := startBG(t, "send", "--timeout", "1m", "--token", sendTok, r.hs, "dev.3")

	watchTok := r.mint(t, "--watch", "dev.>", "--ttl", "1h")
	testutil.Eventually(t, 20*time.Second, func() error {
		req, _ := http.NewRequest("GET", r.base+"/api/channels/dev.3", nil)
		req.Header.Set("Authorization", "Bearer "+watchTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var ci struct{ Senders int }
		json.NewDecoder(resp.Body).Decode(&ci)
		if resp.StatusCode != 200 || ci.Senders != 1 {
			return fmt.Errorf("%s, %d senders", resp.Status, ci.Senders)
		}
		return nil
	})
	if resp, err := http.Get(r.base + "/api/channels/dev.3"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/api/channels without a token: %v %v", resp.Status, err)
	} else {
		resp.Body.Close()
	}

	refused := exec.Command(relayBin, "watch", "--talk", "--token", watchTok, r.ws+"/ws/dev.3")
	refused.Stdin = strings.NewReader("not allowed\n")
	stderr := &syncBuffer{}
	refused.Stderr = stderr
	err := refused.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(stderr.String(), "4403") {
		t.Errorf("watch-only token talking: %v, stderr %q; want exit 3 with 4403", err, stderr.String())
	}

	ctlTok := r.mint(t, "--watch", "dev.>", "--control", "dev.3", "--ttl", "1h")
	w := startBG(t, "watch", "--talk", "--token", ctlTok, r.ws+"/ws/dev.3")
	fmt.Fprintln(w.stdin, "allowed")
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := sender.stdout.String(); got != "allowed\n" {
			return fmt.Errorf("the sender printed %q", got)
		}
		return nil
	})
}
