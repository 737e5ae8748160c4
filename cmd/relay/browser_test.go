package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Screenshots are written to a temporary directory; with
// RELAY_UPDATE_SCREENSHOT=1 they are also copied into docs/ (the README shows
// docs/screenshot.png), so a test run never changes the tree by itself.
const updateScreenshotEnv = "RELAY_UPDATE_SCREENSHOT"

// TestBrowserPage drives the demo page of `relay all` in headless Chromium:
// an invalid ?channel is refused on the page; the default page shows the
// send commands with the real ingest port and every line sent over TCP, in
// order (binary as size and hex); after the server restarts on the same
// ports the page reconnects by itself and shows new lines; the channel
// picker switches channels and updates the URL; pause holds rows back while
// counting, clear empties the list; a burst of 20,000 messages is counted
// exactly while the list stays bounded; back goes to the previous channel;
// the page reports no errors. It saves screenshots at desktop and phone
// widths (and dark).
func TestBrowserPage(t *testing.T) {
	t.Parallel()
	browserPath := findChromium(t)

	fixed, hs, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t), freePort(t)
	env := []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line," + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_SHUTDOWN_GRACE=5s",
		burstQueue, // the burst below must not make the page a slow consumer
	}
	ready := []string{"http://" + httpAddr + "/readyz", "http://" + ingestHTTP + "/readyz"}
	p := startRelay(t, env, "all")
	waitReady(t, ready...)
	base := "http://" + httpAddr
	_, hsPort, _ := strings.Cut(hs, ":")

	b := newBrowser(t, browserPath)
	b.do(t, chromedp.EmulateViewport(1280, 800))

	// An invalid channel in the URL: an error, no connection.
	b.do(t, chromedp.Navigate(base+"/?channel=bad..name"))
	b.waitState(t, "invalid")
	if msg := b.eval(t, `document.getElementById("channel-error").hidden ? "" : document.getElementById("channel-error").textContent`); !strings.Contains(msg, "dot") {
		t.Errorf("invalid channel: error %q, want one about dots", msg)
	}
	if m := metricsText(t, base+"/metrics"); !strings.Contains(m, `relay_fanout_refused_total{reason="bad_channel"} 0`) {
		t.Error("the page tried to open a WebSocket for an invalid channel")
	}

	// Without ?channel: "default", and how to send to it.
	b.do(t, chromedp.Navigate(base+"/"))
	b.waitState(t, "open")
	wantNC := fmt.Sprintf(`printf 'default\nhello\n' | nc -q1 127.0.0.1 %s`, hsPort)
	wantSend := fmt.Sprintf("echo hello | relay send 127.0.0.1:%s default", hsPort)
	if got := b.eval(t, `document.getElementById("cmd-nc").textContent`); got != wantNC {
		t.Errorf("nc command %q, want %q", got, wantNC)
	}
	if got := b.eval(t, `document.getElementById("cmd-send").textContent`); got != wantSend {
		t.Errorf("relay send command %q, want %q", got, wantSend)
	}

	// Lines over TCP appear in order; a line that is not UTF-8 is binary.
	var want []string
	for i := range 12 {
		want = append(want, fmt.Sprintf(`{"sensor":"lab-%d","temp_c":%.1f,"seq":%d}`, i%3+1, 20.5+float64(i%5)*0.4, i))
	}
	if err := sendRaw(hs, "default", strings.Join(want, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	b.waitMessages(t, want)
	if err := sendRaw(fixed, "", "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\n"); err != nil {
		t.Fatal(err)
	}
	want = append(want, "binary · 12 Bff d8 ff e0 00 10 4a 46 49 46 00 01")
	b.waitMessages(t, want)

	// An empty line is an empty message, labelled inside its own row.
	if err := sendRaw(fixed, "", "\nafter the empty one\n"); err != nil {
		t.Fatal(err)
	}
	want = append(want, "", "after the empty one")
	b.waitMessages(t, want)
	if label := b.eval(t, `getComputedStyle(document.querySelector("#log li.msg .b.empty"), "::after").content`); label != `"empty message"` {
		t.Errorf("an empty message is labelled %s, want \"empty message\"", label)
	}
	b.checkRowsDoNotOverlap(t)

	// Restart on the same ports: the page sees 1001, reconnects by itself
	// and shows what is sent after that.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("relay all exited %d after SIGTERM", code)
	}
	// The row appears in the next animation frame after the close.
	ev := b.waitEval(t, "the page to show the disconnect", `[...document.querySelectorAll("#log li.event")].map(e => e.textContent).join("\n")`,
		func(s string) bool { return strings.Contains(s, "Disconnected:") })
	if !strings.Contains(ev, "Disconnected: 1001") {
		t.Errorf("the disconnect shown is not 1001 Going Away: %q", ev)
	}
	restartRelay(t, env, ready)
	b.waitState(t, "open")
	var after []string
	for i := 12; i < 20; i++ {
		after = append(after, fmt.Sprintf(`{"sensor":"lab-%d","temp_c":%.1f,"seq":%d}`, i%3+1, 20.5+float64(i%5)*0.4, i))
	}
	if err := relaySend(hs, "default", strings.Join(after, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	want = append(want, after...)
	b.waitMessages(t, want)
	if got := b.eval(t, `document.getElementById("count").textContent`); got != strconv.Itoa(len(want)) {
		t.Errorf("message count %q, want %d", got, len(want))
	}

	b.screenshots(t)

	// The picker: an invalid name is refused and the page stays connected;
	// a valid one connects and goes into the URL.
	b.do(t,
		chromedp.SetValue(chromedp.ID("channel-input"), "bad name"),
		chromedp.Click(chromedp.CSS(`#picker button[type="submit"]`)),
	)
	b.waitEval(t, "the picker's error", `document.getElementById("channel-error").textContent`, func(s string) bool { return strings.Contains(s, "space") })
	if s := b.eval(t, `document.getElementById("status").dataset.state + " " + location.search`); s != "open " {
		t.Errorf("after an invalid pick: state and search %q, want still open on /", s)
	}
	b.do(t,
		chromedp.SetValue(chromedp.ID("channel-input"), "sensors.lab"),
		chromedp.Click(chromedp.CSS(`#picker button[type="submit"]`)),
	)
	b.waitEval(t, "sensors.lab to open", `location.search + " " + document.title + " " + document.getElementById("status").dataset.state`,
		func(s string) bool { return s == "?channel=sensors.lab sensors.lab · relay open" })
	b.waitMessages(t, nil)

	// Pause: counted, not shown; Resume shows them; Clear empties the list.
	b.do(t, chromedp.Click(chromedp.ID("pause")))
	held := lines("held", 5)
	if err := sendRaw(hs, "sensors.lab", held); err != nil {
		t.Fatal(err)
	}
	b.waitEval(t, "5 messages counted while paused",
		`document.getElementById("count").textContent + "|" + document.getElementById("paused-note").textContent`,
		func(s string) bool { return s == "5|Paused · 5 new" })
	if n := b.eval(t, `String(document.querySelectorAll("#log li.msg").length)`); n != "0" {
		t.Errorf("paused page shows %s messages", n)
	}
	b.do(t, chromedp.Click(chromedp.ID("pause")))
	b.waitMessages(t, strings.Split(strings.TrimSuffix(held, "\n"), "\n"))
	b.do(t, chromedp.Click(chromedp.ID("clear")))
	b.waitEval(t, "an empty list after Clear",
		`document.querySelectorAll("#log li").length + "|" + document.getElementById("count").textContent + "|" + document.getElementById("empty").hidden`,
		func(s string) bool { return s == "0|0|false" })

	// A burst: every message counted, at most 500 rows, the newest last.
	const burst = 20000
	if err := sendRaw(hs, "sensors.lab", lines("burst", burst)); err != nil {
		t.Fatal(err)
	}
	b.waitEval(t, "the burst to be counted", `document.getElementById("count").textContent.replace(/\D/g, "")`,
		func(s string) bool { return s == strconv.Itoa(burst) })
	b.waitEval(t, "the last burst line to be shown",
		`document.querySelectorAll("#log li").length + " " + document.querySelector("#log li:last-child .b").textContent`,
		func(s string) bool { return s == fmt.Sprintf("500 burst %d", burst-1) })

	// Back: the URL drives the page, so default opens again.
	b.eval(t, `history.back(), "ok"`)
	b.waitEval(t, "default after going back", `location.search + "|" + document.getElementById("channel-input").value + "|" + document.getElementById("status").dataset.state`,
		func(s string) bool { return s == "|default|open" })

	b.checkProblems(t)
}

// findChromium returns the path of Debian's chromium. Without it the test
// skips, unless RELAY_REQUIRE_E2E=1 (CI), where it fails.
func findChromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("RELAY_REQUIRE_E2E") == "1" {
		t.Fatal("chromium not found in PATH (apt-get install chromium; .ci/apt-packages lists it)")
	}
	t.Skip("chromium not found in PATH; install Debian's chromium to run the browser test")
	return ""
}

// restartRelay starts `relay all` again on the ports of env. A port can be
// taken for a moment by another test's outgoing connection, so a start that
// fails with "address already in use" is tried again.
func restartRelay(t *testing.T, env, ready []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := startRelay(t, env, "all")
		err := readyOrExited(p, ready, 30*time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(p.stderr.String(), "address already in use") {
			t.Fatalf("restarting relay all: %v\n%s", err, p.stderr.String())
		}
		t.Logf("restart: %v; trying again", err)
		time.Sleep(250 * time.Millisecond) // back off before the next start
	}
}

func readyOrExited(p *proc, urls []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, u := range urls {
		for {
			select {
			case <-p.done:
				return fmt.Errorf("relay exited: %v", p.err)
			default:
			}
			resp, err := http.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = errors.New(resp.Status)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %s: %v", u, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// browser is one headless Chromium tab.
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	problems []string // exceptions and console errors of the page
}

func newBrowser(t testing.TB, execPath string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
	})
	// Start the browser now. The first run must use ctx itself (a derived
	// context's end would close the browser), so a timer bounds it: a cold
	// start on a busy machine is slow, but not this slow.
	const startTimeout = 90 * time.Second
	timer := time.AfterFunc(startTimeout, cancelTab)
	err := chromedp.Do(ctx)
	if !timer.Stop() {
		t.Fatalf("chromium did not start within %s: %v", startTimeout, err)
	}
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	b := &browser{ctx: ctx}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatal(err)
	}
	return b
}

// record keeps what the page reports as going wrong. It runs in chromedp's
// event loop, so it only appends.
func (b *browser) record(ev any) {
	var problem string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		problem = "exception: " + ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil {
			problem += " " + ex.Description
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			problem = fmt.Sprintf("%s error: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	}
	if problem != "" {
		b.mu.Lock()
		b.problems = append(b.problems, problem)
		b.mu.Unlock()
	}
}

// checkProblems fails on any error the page reported, except the failed
// WebSocket connections expected while the server was down.
func (b *browser) checkProblems(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		if strings.Contains(p, "WebSocket connection to") {
			t.Logf("page (expected during the restart): %s", p)
			continue
		}
		t.Errorf("page: %s", p)
	}
}

// do runs actions with a bound.
func (b *browser) do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression that yields a string.
func (b *browser) eval(t *testing.T, expr string, opts ...chromedp.EvaluateOption) string {
	t.Helper()
	s, err := evaluate[string](b, expr, opts...)
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return s
}

func evaluate[T any](b *browser, expr string, opts ...chromedp.EvaluateOption) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
}

// waitFor polls expr until ok accepts its value, for at most a minute. The
// page is polled, never waited on with a sleep.
func waitFor[T any](t *testing.T, b *browser, what, expr string, ok func(T) bool) T {
	t.Helper()
	const timeout = 60 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		v, err := evaluate[T](b, expr)
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			status, _ := evaluate[string](b, `document.getElementById("status").textContent`)
			t.Fatalf("waited %s for %s: last value %v, error %v; page status %q", timeout, what, v, err, status)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

func (b *browser) waitEval(t *testing.T, what, expr string, ok func(string) bool) string {
	t.Helper()
	return waitFor(t, b, what, expr, ok)
}

func (b *browser) waitState(t *testing.T, state string) {
	t.Helper()
	b.waitEval(t, "state "+state, `document.getElementById("status").dataset.state`, func(s string) bool { return s == state })
}

// checkRowsDoNotOverlap checks the message list's geometry: each row starts
// at or below the end of the one before, and everything drawn in a row stays
// inside it.
func (b *browser) checkRowsDoNotOverlap(t *testing.T) {
	t.Helper()
	problems := b.eval(t, `(() => {
		const out = [], px = 0.5;
		let prev = null;
		for (const li of document.querySelectorAll("#log li")) {
			const r = li.getBoundingClientRect();
			const name = JSON.stringify(li.textContent.slice(0, 40));
			if (prev && r.top < prev.bottom - px) out.push("row " + name + " starts at " + r.top + ", inside the row above (ends " + prev.bottom + ")");
			for (const el of li.querySelectorAll("*")) {
				const c = el.getBoundingClientRect();
				if (c.width === 0 && c.height === 0) continue;
				if (c.top < r.top - px || c.bottom > r.bottom + px || c.left < r.left - px || c.right > r.right + px)
					out.push(el.tagName.toLowerCase() + "." + [...el.classList].join(".") + " of row " + name + " is drawn at " +
						[c.left, c.top, c.right, c.bottom].map(Math.round) + ", outside its row " + [r.left, r.top, r.right, r.bottom].map(Math.round));
			}
			prev = r;
		}
		return out.join("\n");
	})()`)
	if problems != "" {
		t.Errorf("message rows overlap:\n%s", problems)
	}
}

// waitMessages waits until the page shows as many messages as want, then
// checks that they are exactly want, in order.
func (b *browser) waitMessages(t *testing.T, want []string) {
	t.Helper()
	got := waitFor(t, b, fmt.Sprintf("%d messages", len(want)),
		`[...document.querySelectorAll("#log li.msg .b")].map(e => e.textContent)`,
		func(got []string) bool { return len(got) >= len(want) })
	if !slices.Equal(got, want) {
		t.Fatalf("page shows %d messages:\n%s\nwant %d:\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

// screenshots saves the page at desktop and phone widths (and dark, for
// review) into a temporary directory, and into docs/ when asked to.
func (b *browser) screenshots(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	shots := []struct {
		name          string
		width, height int64
		scale         float64
		mobile, dark  bool
		docs          bool
	}{
		{"screenshot.png", 1280, 800, 1, false, false, true},
		{"screenshot-phone.png", 390, 844, 2, true, false, true},
		{"screenshot-dark.png", 1280, 800, 1, false, true, true},
	}
	for _, s := range shots {
		opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(s.scale)}
		if s.mobile {
			opts = append(opts, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		scheme := "light"
		if s.dark {
			scheme = "dark"
		}
		b.do(t,
			chromedp.EmulateViewport(s.width, s.height, opts...),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
					Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
				})
				return err
			}),
		)
		// Two animation frames: layout and paint at the new size are done.
		b.eval(t, `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r("ok"))))`, chromedp.EvalAwaitPromise)
		ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatalf("screenshot %s: %v", s.name, err)
		}
		path := filepath.Join(dir, s.name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
		if s.docs && os.Getenv(updateScreenshotEnv) == "1" {
			dst := filepath.Join("..", "..", "docs", s.name)
			if err := os.WriteFile(dst, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("updated %s", dst)
		}
	}
	b.do(t, chromedp.EmulateViewport(1280, 800))
}
