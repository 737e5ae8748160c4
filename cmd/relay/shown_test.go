package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// findNC returns Debian's netcat-openbsd, the nc the shown commands are
// written for, or skips (fails under RELAY_REQUIRE_E2E=1).
func findNC(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nc"); err == nil {
		if target, _ := filepath.EvalSymlinks(p); strings.Contains(target, "openbsd") {
			return p
		}
	}
	if os.Getenv("RELAY_REQUIRE_E2E") == "1" {
		t.Fatal("netcat-openbsd's nc not found in PATH (apt-get install netcat-openbsd; .ci/apt-packages lists it)")
	}
	t.Skip("netcat-openbsd's nc not found in PATH")
	return ""
}

// runShown runs a command exactly as relay shows it to a user and fails if
// it does not exit by itself (netcat-openbsd without -q1/-N waits forever
// after stdin ends).
func runShown(t *testing.T, command string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	// On timeout kill nc too, not just sh: it holds the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s: did not exit within 15 s (output %q)", command, out)
	}
	if err != nil {
		t.Fatalf("%s: %v (output %q)", command, err, out)
	}
}

// TestShownCommandsExit runs, with the real nc, the send commands relay
// shows a new user — the startup log's and the demo page's — and checks
// each exits on its own and delivers. README's nc commands must use the same
// form.
func TestShownCommandsExit(t *testing.T) {
	t.Parallel()
	findNC(t)
	fixed, hs, httpAddr := freePort(t), freePort(t), freePort(t)
	p := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line," + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=",
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz")
	ws := dialWS(t, "ws://"+httpAddr+"/ws/default")

	// The startup log: `send="echo hello | nc -q1 localhost PORT"`.
	var logged string
	testutil.Eventually(t, 10*time.Second, func() error {
		m := regexp.MustCompile(`send="([^"]+)"`).FindStringSubmatch(p.stderr.String())
		if m == nil {
			return fmt.Errorf("no send command in the startup log yet")
		}
		logged = m[1]
		return nil
	})
	runShown(t, logged)

	// The demo page: app.js builds the command from a template.
	resp, err := http.Get("http://" + httpAddr + "/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile("ui\\.cmdNc\\.textContent = `([^`]+)`").FindSubmatch(js)
	if m == nil {
		t.Fatal("app.js: no ui.cmdNc.textContent template")
	}
	_, hsPort, _ := strings.Cut(hs, ":")
	page := strings.NewReplacer(`${name}`, "default", `${host}`, "127.0.0.1", `${port}`, hsPort, `\\n`, `\n`).Replace(string(m[1]))
	runShown(t, page)

	testutil.Eventually(t, 10*time.Second, func() error {
		if got := ws.messages(); len(got) != 2 || got[0] != "hello" || got[1] != "hello" {
			return fmt.Errorf("received %q, want hello twice", got)
		}
		return nil
	})

	// Every nc command shown anywhere else uses the same form.
	for _, f := range []string{"../../README.md", "../../deploy/README.md", "../../fanout/web/index.html"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, after := range strings.Split(line, "| nc ")[1:] {
				if !strings.HasPrefix(after, "-q1 ") && !strings.HasPrefix(after, "-N ") {
					t.Errorf("%s: %q: use nc -q1 (Debian's nc waits forever after stdin ends)", f, strings.TrimSpace(line))
				}
			}
		}
	}
}
