package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// BenchmarkBrowserControlRoundTrip is BenchmarkControl seen from real
// Chromium: the built binary runs `relay all` with RELAY_CONTROL_CHANNELS=rt.>
// and RELAY_FANOUT_CONTROL_RATE=100000 (the default 100/s would measure the
// limiter, not the path). A Go TCP "device" is a sender of rt.x on a
// handshake listener and writes every control line it reads back as a data
// line of rt.x. A page opens ws://…/ws/rt.x with the subprotocol relay.v1
// (plain frames) and measures, with performance.now():
//
//	latency: send one message, await its echo, next; p50/p99 in µs.
//	rate:    messages pipelined, at most 64 in flight (as BenchmarkControl),
//	         echoes received per second.
//
// A round trip here is browser -> fanout -> NATS -> ingest -> TCP device ->
// ingest -> NATS -> fanout -> browser: twice the path BenchmarkControl times.
// The page is served by the benchmark with COOP/COEP headers, so it is
// cross-origin isolated and performance.now() has 5 µs resolution rather
// than 100 µs; the fanout allows its origin by RELAY_FANOUT_ALLOWED_ORIGINS.
//
//	go test -run '^$' -bench BenchmarkBrowserControlRoundTrip -benchtime 2000x ./cmd/relay
func BenchmarkBrowserControlRoundTrip(b *testing.B) {
	browserPath := findChromium(b)

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cross-Origin-Opener-Policy", "same-origin")
		w.Header().Set("Cross-Origin-Embedder-Policy", "require-corp")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>rt</title>")
	}))
	b.Cleanup(page.Close)

	hs, httpAddr := freePort(b), freePort(b)
	startRelay(b, []string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=",
		"RELAY_CONTROL_CHANNELS=rt.>",
		"RELAY_FANOUT_CONTROL_RATE=100000",
		"RELAY_FANOUT_ALLOWED_ORIGINS=127.0.0.1:*",
		"RELAY_LOG_LEVEL=warn",
	}, "all")
	waitReady(b, "http://"+httpAddr+"/readyz")

	device := echoDevice(b, hs, "rt.x")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _ := channelInfoB(httpAddr, "rt.x"); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the fanout never counted the device as a sender of rt.x")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}

	br := newBrowser(b, browserPath)
	br.do(b, chromedp.Navigate(page.URL+"/"))
	isolated := browserRun[bool](b, br, `crossOriginIsolated`)
	if !isolated {
		b.Fatal("the page is not cross-origin isolated: performance.now() would be coarsened to 100 µs")
	}
	proto := browserRun[string](b, br, fmt.Sprintf(`new Promise((resolve, reject) => {
		const ws = new WebSocket("ws://%s/ws/rt.x", ["relay.v1"]);
		window.rt = {ws, onmsg: null};
		ws.onmessage = e => window.rt.onmsg && window.rt.onmsg(e.data);
		ws.onopen = () => resolve(ws.protocol);
		ws.onerror = () => reject(new Error("websocket error"));
		ws.onclose = e => { window.rt.closed = e.code + " " + e.reason; };
	})`, httpAddr))
	if proto != "relay.v1" {
		b.Fatalf("subprotocol %q, want relay.v1", proto)
	}

	b.Run("latency", func(b *testing.B) {
		b.ResetTimer()
		out := browserRun[string](b, br, fmt.Sprintf(`(async () => {
			const n = %d, lat = new Array(n);
			for (let i = 0; i < n; i++) {
				const want = "L" + i;
				const t0 = performance.now();
				await new Promise((resolve, reject) => {
					window.rt.onmsg = d => d === want ? resolve() : reject(new Error("echo " + d + ", want " + want));
					window.rt.ws.send(want);
				});
				lat[i] = (performance.now() - t0) * 1000;
			}
			return JSON.stringify(lat);
		})()`, b.N))
		b.StopTimer()
		var lat []float64
		if err := json.Unmarshal([]byte(out), &lat); err != nil || len(lat) != b.N {
			b.Fatalf("latencies: %d of %d, %v", len(lat), b.N, err)
		}
		slices.Sort(lat)
		b.ReportMetric(lat[len(lat)/2], "p50-µs")
		b.ReportMetric(lat[len(lat)*99/100], "p99-µs")
	})

	b.Run("rate", func(b *testing.B) {
		b.ResetTimer()
		out := browserRun[string](b, br, fmt.Sprintf(`new Promise((resolve, reject) => {
			const n = %d, window_ = 64, payload = "x".repeat(62);
			let sent = 0, got = 0;
			const t0 = performance.now();
			const fill = () => { while (sent < n && sent - got < window_) { window.rt.ws.send(payload + (sent %% 100).toString().padStart(2, "0")); sent++; } };
			window.rt.onmsg = d => {
				if (d.length !== 64) { reject(new Error("echo of " + d.length + " bytes")); return; }
				if (++got === n) { resolve(JSON.stringify({ms: performance.now() - t0})); return; }
				fill();
			};
			fill();
		})`, b.N))
		b.StopTimer()
		var r struct{ Ms float64 }
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.Ms <= 0 {
			b.Fatalf("rate result %q: %v", out, err)
		}
		b.ReportMetric(float64(b.N)/(r.Ms/1000), "msgs/s")
	})

	// The same round trip from a Go WebSocket client (coder/websocket), in
	// the same run, for the ratio.
	b.Run("go/latency", func(b *testing.B) {
		ws := dialRT(b, httpAddr)
		ctx := context.Background()
		lat := make([]float64, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			want := "G" + strconv.Itoa(i)
			t0 := time.Now()
			if err := ws.Write(ctx, websocket.MessageText, []byte(want)); err != nil {
				b.Fatal(err)
			}
			_, got, err := ws.Read(ctx)
			if err != nil || string(got) != want {
				b.Fatalf("echo %q %v, want %q", got, err, want)
			}
			lat = append(lat, float64(time.Since(t0).Nanoseconds())/1000)
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(lat[len(lat)/2], "p50-µs")
		b.ReportMetric(lat[len(lat)*99/100], "p99-µs")
	})
	b.Run("go/rate", func(b *testing.B) {
		ws := dialRT(b, httpAddr)
		ctx := context.Background()
		payload := []byte(strings.Repeat("x", 64))
		var got atomic.Int64
		errc := make(chan error, 1)
		b.ResetTimer()
		t0 := time.Now()
		go func() {
			for range b.N {
				_, d, err := ws.Read(ctx)
				if err == nil && len(d) != 64 {
					err = fmt.Errorf("echo of %d bytes", len(d))
				}
				if err != nil {
					errc <- err
					return
				}
				got.Add(1)
			}
			errc <- nil
		}()
		for i := range b.N {
			for int64(i)-got.Load() >= 64 {
				time.Sleep(20 * time.Microsecond) // as BenchmarkControl's window
			}
			if err := ws.Write(ctx, websocket.MessageText, payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		el := time.Since(t0)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	})

	if got := device.lines(); got == 0 {
		b.Error("the device echoed nothing")
	}
	br.checkProblemsTB(b)
}

// browserRun evaluates expr (awaiting a promise) with a bound long enough
// for a benchmark's run on a loaded machine.
func browserRun[T any](b testing.TB, br *browser, expr string) T {
	b.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, 10*time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		closed, _ := evaluate[string](br, `String(window.rt && window.rt.closed)`)
		b.Fatalf("evaluating in the page: %v (websocket closed: %s)", err, closed)
	}
	return v
}

// checkProblemsTB fails on any error the page reported.
func (br *browser) checkProblemsTB(b testing.TB) {
	b.Helper()
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, p := range br.problems {
		b.Errorf("page: %s", p)
	}
}

// dialRT connects a Go WebSocket client to rt.x with the subprotocol relay.v1.
func dialRT(b testing.TB, httpAddr string) *websocket.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws/rt.x", &websocket.DialOptions{Subprotocols: []string{"relay.v1"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ws.CloseNow() })
	return ws
}

type echoer struct{ n atomic.Int64 }

func (e *echoer) lines() int64 { return e.n.Load() }

// echoDevice connects a line sender of channel to the handshake listener at
// addr and writes every control line it reads back as a data line, flushing
// when nothing more is buffered. It stops when the connection closes.
func echoDevice(b testing.TB, addr, channel string) *echoer {
	b.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(c, "%s\n", channel)
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\n" {
		b.Fatalf("handshake: %q %v", line, err)
	}
	c.SetReadDeadline(time.Time{}) // the benchmark's length is b.N's; Cleanup closes c
	e := &echoer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := bufio.NewWriter(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			e.n.Add(1)
			w.WriteString(line)
			if r.Buffered() == 0 && w.Flush() != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { c.Close(); <-done })
	return e
}
