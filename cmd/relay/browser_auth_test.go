package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowserAuth drives the demo page against `relay all` with
// RELAY_AUTH=jwt in headless Chromium: a token given in the URL fragment is
// taken off the address bar, kept in sessionStorage and used (the channel
// goes live and shows what a sender with a token sends); a channel the token
// does not allow shows 4403 in words and is not retried; without a token
// 4401 says a token is needed; a token pasted into the field connects at
// once. The token never reaches relay's logs.
func TestBrowserAuth(t *testing.T) {
	t.Parallel()
	browserPath := findChromium(t)
	r := startAuthRelay(t)
	watchTok := r.mint(t, "--watch", "secret", "--sub", "browser-user", "--ttl", "1h")
	payrollTok := r.mint(t, "--watch", "payroll", "--sub", "accountant", "--ttl", "1h")
	sendTok := r.mint(t, "--send", "secret,payroll", "--sub", "device", "--ttl", "1h")

	b := newBrowser(t, browserPath)
	b.do(t, chromedp.EmulateViewport(1280, 800))
	b.do(t, chromedp.Navigate(r.base+"/?channel=secret#token="+watchTok))
	b.waitState(t, "open")
	if href := b.eval(t, `location.href`); strings.Contains(href, "token") {
		t.Errorf("the token stayed in the address bar: %s", href)
	}
	if got := b.eval(t, `sessionStorage.getItem("relay.token") || ""`); got != watchTok {
		t.Errorf("sessionStorage holds %d bytes, want the token", len(got))
	}
	if s := b.eval(t, `document.getElementById("token-state").textContent`); !strings.Contains(s, "for browser-user") {
		t.Errorf("token state %q, want it to name the holder", s)
	}
	if reply, _, _ := r.handshake(t, "secret "+sendTok, "for your eyes only\n"); reply != "+OK" {
		t.Fatalf("sender: %q", reply)
	}
	b.waitMessages(t, []string{"for your eyes only"})

	// A channel the token does not allow: 4403 in words, no retry loop.
	b.do(t, chromedp.Navigate(r.base+"/?channel=payroll"))
	b.waitState(t, "denied")
	if s := b.eval(t, `document.getElementById("token-state").textContent`); !strings.Contains(s, "does not allow watching payroll") {
		t.Errorf("4403 shown as %q", s)
	}
	forbidden := `relay_fanout_refused_total{reason="forbidden"} 1`
	if m := metricsText(t, r.base+"/metrics"); !strings.Contains(m, forbidden) {
		t.Fatalf("metrics lack %s", forbidden)
	}
	// The page's first retry would come within 0.5 s, the next within 1 s:
	// after 3 s without one there is no loop. (Absence cannot be polled for.)
	time.Sleep(3 * time.Second)
	if m := metricsText(t, r.base+"/metrics"); !strings.Contains(m, forbidden) {
		t.Errorf("the page retried after 4403:\n%s", grepLines(m, "relay_fanout_refused_total"))
	}
	if !b.evalBool(t, `document.getElementById("retry").hidden`) {
		t.Error("a retry countdown is shown after 4403")
	}

	// Forget the token: 4401, a token is needed.
	b.do(t, chromedp.Click(chromedp.ID("token-forget")))
	b.waitEval(t, "4401 text", `document.getElementById("token-state").textContent`,
		func(s string) bool { return strings.Contains(s, "payroll needs a token") })
	if got := b.eval(t, `sessionStorage.getItem("relay.token") || ""`); got != "" {
		t.Error("Forget left the token in sessionStorage")
	}

	// Paste the right token: live at once.
	b.do(t, chromedp.SetValue(chromedp.ID("token-input"), payrollTok), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
	b.waitState(t, "open")
	if reply, _, _ := r.handshake(t, "payroll "+sendTok, "salaries\n"); reply != "+OK" {
		t.Fatalf("sender: %q", reply)
	}
	b.waitMessages(t, []string{"salaries"})
	b.checkProblems(t)
	assertNoTokens(t, []string{watchTok, payrollTok, sendTok}, map[string]string{"logs": r.p.stderr.String()})
}

func (b *browser) evalBool(t *testing.T, expr string) bool {
	t.Helper()
	v, err := evaluate[bool](b, expr)
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}
