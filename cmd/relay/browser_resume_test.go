package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/relaydev/relay/shared/testutil"
)

// TestBrowserResume: the demo page on a durable channel, in headless
// Chromium, split mode. Its fanout is SIGKILLed; lines are sent while it is
// down; it is restarted where it was. The page reconnects with ?since= its
// last sequence and shows every line once, in order, and
// "Resumed after #N: 3 replayed, 0 missed".
func TestBrowserResume(t *testing.T) {
	t.Parallel()
	browserPath := findChromium(t)
	ns := testutil.JetStreamServer(t)
	env := []string{"RELAY_NATS_URL=" + ns.ClientURL(), "RELAY_DURABLE_CHANNELS=page.>"}
	hs, ingestHTTP, addr := freePort(t), freePort(t), freePort(t)
	startRelay(t, append(env, "RELAY_INGEST_LISTENERS="+hs+"=*/line", "RELAY_INGEST_HTTP_ADDR="+ingestHTTP), "ingest")
	fanoutEnv := append(env, "RELAY_FANOUT_ADDR="+addr)
	fanout := startRelay(t, fanoutEnv, "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+addr+"/readyz")

	b := newBrowser(t, browserPath)
	b.do(t, chromedp.EmulateViewport(1280, 800), chromedp.Navigate("http://"+addr+"/?channel=page.a"))
	b.waitState(t, "open")
	if err := sendRaw(hs, "page.a", "one\ntwo\n"); err != nil {
		t.Fatal(err)
	}
	b.waitMessages(t, []string{"one", "two"})

	if err := fanout.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fanout.wait(t, 30e9)
	b.waitState(t, "closed")
	if err := sendRaw(hs, "page.a", "three\nfour\nfive\n"); err != nil {
		t.Fatal(err)
	}
	startRelay(t, fanoutEnv, "fanout")
	waitReady(t, "http://"+addr+"/readyz")
	b.waitState(t, "open")
	b.waitMessages(t, []string{"one", "two", "three", "four", "five"})
	got := b.waitEval(t, "the resume event", `[...document.querySelectorAll("#log li.event")].map(e => e.textContent).join("\n")`,
		func(s string) bool { return strings.Contains(s, "Resumed after") })
	if !strings.Contains(got, "3 replayed, 0 missed") {
		t.Errorf("events shown:\n%s\nwant one saying 3 replayed, 0 missed", got)
	}
	if err := sendRaw(hs, "page.a", "six\n"); err != nil {
		t.Fatal(err)
	}
	b.waitMessages(t, []string{"one", "two", "three", "four", "five", "six"})
	b.checkRowsDoNotOverlap(t)
	b.checkProblems(t)
}
