package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/relaydev/relay/shared/testutil"
)

// TestBrowserTalkBack: in real Chromium, the demo page of a control channel
// shows the sender count (the senders event) and a send box; a line typed
// there reaches a `relay send` sender on its stdout, and the count follows
// senders arriving and leaving. On another channel there is no send box.
func TestBrowserTalkBack(t *testing.T) {
	t.Parallel()
	browserPath := findChromium(t)
	hs, httpAddr := freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=",
		"RELAY_CONTROL_CHANNELS=dev.>",
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz")
	base := "http://" + httpAddr

	sender := startBG(t, "send", "--timeout", "1m", hs, "dev.lamp")
	waitSenders(t, httpAddr, "dev.lamp", 1)

	b := newBrowser(t, browserPath)
	b.do(t, chromedp.EmulateViewport(1280, 800))
	b.do(t, chromedp.Navigate(base+"/?channel=dev.lamp"))
	b.waitState(t, "open")
	b.waitEval(t, "the sender count and the send box",
		`document.getElementById("senders").textContent + "|" + document.getElementById("senders-stat").hidden + "|" + document.getElementById("talk").hidden`,
		func(s string) bool { return s == "1|false|false" })

	// Type, press Enter: the sender prints it.
	b.do(t,
		chromedp.SendKeys(chromedp.ID("talk-input"), "switch on\n"),
	)
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := sender.stdout.String(); got != "switch on\n" {
			return fmt.Errorf("the sender printed %q", got)
		}
		return nil
	})
	if v := b.eval(t, `document.getElementById("talk-input").value`); v != "" {
		t.Errorf("the send box still holds %q", v)
	}
	b.waitEval(t, "the sent line in the log", `[...document.querySelectorAll("#log li.event")].map(e => e.textContent).join("\n")`,
		func(s string) bool { return strings.Contains(s, "Sent to senders: switch on") })

	// The sender's own lines show up as messages; the count follows senders.
	fmt.Fprintln(sender.stdin, "lamp is on")
	b.waitMessages(t, []string{"lamp is on"})
	second := startBG(t, "send", "--timeout", "1m", hs, "dev.lamp")
	b.waitEval(t, "2 senders", `document.getElementById("senders").textContent`, func(s string) bool { return s == "2" })
	second.stdin.Close()
	b.waitEval(t, "1 sender", `document.getElementById("senders").textContent`, func(s string) bool { return s == "1" })

	// A channel that is not a control channel: no send box, no count.
	b.do(t, chromedp.Navigate(base+"/?channel=plain"))
	b.waitState(t, "open")
	// A senders event would be queued at the join, before any message.
	if err := sendRaw(hs, "plain", "hello\n"); err != nil {
		t.Fatal(err)
	}
	b.waitMessages(t, []string{"hello"})
	if s := b.eval(t, `document.getElementById("talk").hidden + "|" + document.getElementById("senders-stat").hidden`); s != "true|true" {
		t.Errorf("on a plain channel: send box and count hidden = %s, want true|true", s)
	}
	b.checkProblems(t)
}
