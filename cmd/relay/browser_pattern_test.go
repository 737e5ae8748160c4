package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserPattern drives the demo page on wildcard patterns in headless
// Chromium: the page speaks the relay.v1.json envelope (the channel column
// comes from it, and a binary payload from data_b64 shows as on a plain
// socket), /?channel=sensors.* shows sensors.a and sensors.b with their
// channel and nothing of other channels or deeper ones, sensors.> adds the
// deeper ones, the send commands name a channel the pattern matches and the
// watch command quotes the pattern, a misplaced wildcard is refused on the
// page, rows do not overlap, and the page reports no errors.
func TestBrowserPattern(t *testing.T) {
	t.Parallel()
	browserPath := findChromium(t)
	r := startAll(t)
	base := "http://" + r.http

	b := newBrowser(t, browserPath)
	b.do(t, chromedp.EmulateViewport(1280, 800))

	// A wildcard inside a token, or '>' not last: refused on the page.
	for _, bad := range []struct{ name, says string }{{"sensors.>.x", "last part"}, {"sensors*", "stand alone"}} {
		b.do(t, chromedp.Navigate(base+"/?channel="+bad.name))
		b.waitState(t, "invalid")
		if msg := b.eval(t, `document.getElementById("channel-error").textContent`); !strings.Contains(msg, bad.says) {
			t.Errorf("%s: error %q, want one saying %q", bad.name, msg, bad.says)
		}
	}

	b.do(t, chromedp.Navigate(base+"/?channel=sensors.*"))
	b.waitState(t, "open")
	if got := b.eval(t, `document.getElementById("cmd-send").textContent`); !strings.HasSuffix(got, " sensors.example") {
		t.Errorf("relay send command %q: want it to name a channel the pattern matches", got)
	}
	if got, want := b.eval(t, `document.getElementById("cmd-watch").textContent`),
		fmt.Sprintf("relay watch --envelope 'ws://%s/ws/sensors.*'", r.http); got != want {
		t.Errorf("watch command %q, want %q", got, want)
	}
	if got := b.eval(t, `document.getElementById("status-text").textContent`); got != "Live on sensors.*" {
		t.Errorf("status %q", got)
	}
	for _, s := range []struct{ channel, data string }{
		{"sensors.a", "a one"}, {"other", "not shown"}, {"sensors.b", "b one"}, {"sensors.a.deep", "too deep"}, {"sensors.a", "a two"},
	} {
		if err := sendRaw(r.hs, s.channel, s.data+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	// A line that is not UTF-8 travels as binary: data_b64 in the envelope.
	if err := sendRaw(r.hs, "sensors.b", "\xff\xd8\xff\n"); err != nil {
		t.Fatal(err)
	}
	want := []string{"a one", "b one", "a two", "binary · 3 Bff d8 ff"}
	b.waitMessages(t, want)
	if got := b.eval(t, `[...document.querySelectorAll("#log li.msg .c")].map(e => e.textContent).join(" ")`); got != "sensors.a sensors.b sensors.a sensors.b" {
		t.Errorf("channel column %q, want the concrete channel of each message", got)
	}
	b.checkRowsDoNotOverlap(t)

	// sensors.>: deeper channels too.
	b.do(t, chromedp.Navigate(base+"/?channel=sensors.%3E"))
	b.waitState(t, "open")
	for _, s := range []struct{ channel, data string }{{"sensors.a.deep", "deep"}, {"sensors.c", "c"}, {"sensorsx", "no"}} {
		if err := sendRaw(r.hs, s.channel, s.data+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	b.waitMessages(t, []string{"deep", "c"})
	if got := b.eval(t, `[...document.querySelectorAll("#log li.msg .c")].map(e => e.textContent).join(" ")`); got != "sensors.a.deep sensors.c" {
		t.Errorf("channel column %q", got)
	}

	// One channel again: no channel column, payloads as before.
	b.do(t, chromedp.Navigate(base+"/?channel=sensors.c"))
	b.waitState(t, "open")
	if err := sendRaw(r.hs, "sensors.c", "single\n"); err != nil {
		t.Fatal(err)
	}
	b.waitMessages(t, []string{"single"})
	if n := b.eval(t, `String(document.querySelectorAll("#log li .c").length) + document.getElementById("log").className`); n != "0log" {
		t.Errorf("a single channel shows a channel column: %q", n)
	}
	b.checkProblems(t)
}
