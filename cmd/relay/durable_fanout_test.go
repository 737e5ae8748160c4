package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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

// resumingWatcher is a WebSocket watcher of a durable channel as a careful
// client writes one: it asks for the envelope, remembers the last stream
// sequence it got, and when its connection ends it connects again (to the
// next URL of its list, in turn) with ?since= that sequence.
type resumingWatcher struct {
	urls    []string // ws://HOST:PORT/ws/CHANNEL, tried in turn
	mu      sync.Mutex
	data    []string
	lastSeq uint64
	conns   int // connections made
	gaps    []string
	stop    chan struct{}
	done    chan struct{}
}

func startResumingWatcher(t *testing.T, urls ...string) *resumingWatcher {
	t.Helper()
	w := &resumingWatcher{urls: urls, stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	go w.run(ready)
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w
}

func (w *resumingWatcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *resumingWatcher) run(ready chan<- error) {
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-w.stop; cancel() }()
	for i := 0; ctx.Err() == nil; i++ {
		u := w.urls[i%len(w.urls)]
		w.mu.Lock()
		if w.conns > 0 {
			u += "?since=" + strconv.FormatUint(w.lastSeq, 10)
		}
		w.mu.Unlock()
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, _, err := websocket.Dial(dctx, u, &websocket.DialOptions{Subprotocols: []string{"relay.v1.json"}})
		dcancel()
		if ready != nil {
			ready <- err
			ready = nil
			if err != nil {
				return
			}
		}
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		w.mu.Lock()
		w.conns++
		w.mu.Unlock()
		c.SetReadLimit(1 << 20)
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				break
			}
			var f struct {
				Event    string `json:"event"`
				Seq      uint64 `json:"seq"`
				Data     string `json:"data"`
				From, To uint64
			}
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			w.mu.Lock()
			switch f.Event {
			case "":
				w.data = append(w.data, f.Data)
				w.lastSeq = f.Seq
			case "gap":
				w.gaps = append(w.gaps, string(b))
			}
			w.mu.Unlock()
		}
		c.CloseNow()
	}
}

func (w *resumingWatcher) received() (data []string, conns int, gaps []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.data...), w.conns, append([]string(nil), w.gaps...)
}

// cliWatcher is `relay watch --reconnect --seq --since 0 URL`: the
// user's way to follow a durable channel across reconnects.
type cliWatcher struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	data []string
	seqs []uint64
	done chan struct{}
	errs *syncBuffer
}

func startCLIWatcher(t *testing.T, url string) *cliWatcher {
	t.Helper()
	cmd := exec.Command(relayBin, "watch", "--reconnect", "--backoff-max", "500ms", "--seq", "--since", "0", url)
	w := &cliWatcher{cmd: cmd, done: make(chan struct{}), errs: &syncBuffer{}}
	cmd.Stderr = w.errs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seq, data, _ := strings.Cut(sc.Text(), "\t")
			n, _ := strconv.ParseUint(seq, 10, 64)
			w.mu.Lock()
			w.data = append(w.data, data)
			w.seqs = append(w.seqs, n)
			w.mu.Unlock()
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-w.done
		if t.Failed() {
			t.Logf("relay watch stderr:\n%s", w.errs.String())
		}
	})
	return w
}

func (w *cliWatcher) received() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.data...)
}

// sameLines reports the first difference between got and want.
func sameLines(got, want []string) error {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Errorf("line %d is %q, want %q (a gap, a duplicate or a reordering)", i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d lines, want %d", len(got), len(want))
	}
	return nil
}

// TestDurableFanoutSIGKILLResume: split mode with built binaries, NATS with
// JetStream, a durable channel written by two senders at a steady rate.
// One of two fanouts is SIGKILLed mid-stream. Its watchers reconnect with
// ?since= their last sequence — two to the other fanout (whose ring covers
// the point), two (`relay watch --reconnect --seq --since 0`) to the killed
// one's address once it is restarted (a fresh ring: the stream serves the
// replay). Every watcher ends with exactly what the stream stored, in
// order: 0 lost, 0 duplicated.
func TestDurableFanoutSIGKILLResume(t *testing.T) {
	t.Parallel()
	ns := testutil.JetStreamServer(t)
	natsURL := "RELAY_NATS_URL=" + ns.ClientURL()
	const durableChannels = "RELAY_DURABLE_CHANNELS=dk.>"
	hs, ingestHTTP, addrA, addrB := freePort(t), freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{natsURL, durableChannels, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP}, "ingest")
	fanoutEnv := func(addr string) []string { return []string{natsURL, durableChannels, "RELAY_FANOUT_ADDR=" + addr} }
	fanoutA := startRelay(t, fanoutEnv(addrA), "fanout")
	startRelay(t, fanoutEnv(addrB), "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+addrA+"/readyz", "http://"+addrB+"/readyz")

	const channel = "dk.a"
	urlA, urlB := "ws://"+addrA+"/ws/"+channel, "ws://"+addrB+"/ws/"+channel
	onB := startResumingWatcher(t, urlB) // keeps B's ring of the channel filled
	toB := []*resumingWatcher{startResumingWatcher(t, urlA, urlB), startResumingWatcher(t, urlA, urlB)}
	cli := []*cliWatcher{startCLIWatcher(t, urlA), startCLIWatcher(t, urlA)}
	waitFanoutConnections(t, "http://"+addrA+"/metrics", 4)
	waitFanoutConnections(t, "http://"+addrB+"/metrics", 1)

	senders := []*numberedSender{startNumberedSender(t, hs, channel, "s0", 500), startNumberedSender(t, hs, channel, "s1", 500)}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := len(cli[0].received()); n < 500 {
			return fmt.Errorf("watcher has %d lines", n)
		}
		return nil
	})
	if err := fanoutA.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fanoutA.wait(t, 30*time.Second)
	// The killed fanout's clients saw their connections end; two went to
	// B at once. Restart A where it was, for the other two.
	time.Sleep(500 * time.Millisecond) // let the CLI watchers fail a connect or two meanwhile
	startRelay(t, fanoutEnv(addrA), "fanout")
	waitReady(t, "http://"+addrA+"/readyz")
	for i, w := range toB {
		testutil.Eventually(t, 30*time.Second, func() error {
			if _, conns, _ := w.received(); conns < 2 {
				return fmt.Errorf("watcher %d has not reconnected", i)
			}
			return nil
		})
	}
	waitFanoutConnections(t, "http://"+addrA+"/metrics", 2) // the CLI watchers are back
	time.Sleep(time.Second)                                 // more messages after everyone is back
	for _, s := range senders {
		if reply := s.finish(t); strings.Contains(reply, "-ERR") {
			t.Fatalf("sender %s was refused: %s", s.name, reply)
		}
	}

	stored := streamMessages(t, ns.ClientURL(), "relay.ch."+channel)
	if len(stored) < 1000 {
		t.Fatalf("the stream holds %d messages; the senders wrote for seconds", len(stored))
	}
	check := func(name string, got func() []string) {
		t.Helper()
		testutil.Eventually(t, 60*time.Second, func() error {
			if n := len(got()); n < len(stored) {
				return fmt.Errorf("%s has %d of %d lines", name, n, len(stored))
			}
			return nil
		})
		if err := sameLines(got(), stored); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	check("the watcher on the surviving fanout", func() []string { d, _, _ := onB.received(); return d })
	for i, w := range toB {
		check(fmt.Sprintf("watcher %d, resumed on the other fanout", i), func() []string { d, _, _ := w.received(); return d })
		if _, _, gaps := w.received(); len(gaps) > 0 {
			t.Errorf("watcher %d was told of gaps %v: nothing was past retention", i, gaps)
		}
	}
	for i, w := range cli {
		check(fmt.Sprintf("relay watch %d, resumed on the restarted fanout", i), w.received)
		if !strings.Contains(w.errs.String(), "resuming after seq") {
			t.Errorf("relay watch %d never said it resumed:\n%s", i, w.errs.String())
		}
	}
	t.Logf("stored %d messages; every watcher got each once, in order, across the SIGKILL", len(stored))
}

// TestAckedIsReplayable: what `relay send --ack` saw acknowledged (exit 0:
// every line) is exactly what a watcher resuming from the start replays,
// through `relay watch --since 0`.
func TestAckedIsReplayable(t *testing.T) {
	t.Parallel()
	hs, httpAddr, _ := startDurableAll(t, "acked.>")
	const n = 700
	sent := lines("a", n)
	if out, err := sendAck(hs, "acked.x", sent); err != nil {
		t.Fatalf("relay send --ack: %v: %s", err, out)
	}
	want := strings.Split(strings.TrimSuffix(sent, "\n"), "\n")

	cmd := exec.Command(relayBin, "watch", "--since", "0", "-n", strconv.Itoa(n), "--seq", "ws://"+httpAddr+"/ws/acked.x")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("relay watch --since 0: %v", err)
	}
	var got []string
	var last uint64
	for _, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		seq, data, _ := strings.Cut(l, "\t")
		s, err := strconv.ParseUint(seq, 10, 64)
		if err != nil || s <= last {
			t.Fatalf("line %q: sequences must rise", l)
		}
		last = s
		got = append(got, data)
	}
	if err := sameLines(got, want); err != nil {
		t.Fatal(err)
	}
	// And nothing more is stored than was acknowledged.
	cmd = exec.Command(relayBin, "watch", "--since", strconv.FormatUint(last, 10), "-n", "1", "--timeout", "5s", "ws://"+httpAddr+"/ws/acked.x")
	if err := cmd.Start(); err != nil { // started here: the Kill below must not race the start
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("a watcher resuming after the last acknowledged line got something more (%v)", err)
	case <-time.After(2 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// TestWatchResumeUsage: --since and --last need a durable channel (4400:
// exit 3 with the server's reason) and are checked before connecting.
func TestWatchResumeUsage(t *testing.T) {
	t.Parallel()
	_, httpAddr, _ := startDurableAll(t, "hist.>")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--since", "0", "ws://" + httpAddr + "/ws/live"}, 3, "closed by server: 4400 bad resume: live is not a durable channel"},
		{[]string{"--since", "1", "--last", "2", "ws://" + httpAddr + "/ws/hist.a"}, 2, "give --since or --last, not both"},
		{[]string{"--last", "-5", "ws://" + httpAddr + "/ws/hist.a"}, 2, `invalid value "-5" for flag -last: must be 0 or more`},
	} {
		cmd := exec.Command(relayBin, append([]string{"watch"}, tc.args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("relay watch %v: %v, stderr %q; want exit %d and %q", tc.args, err, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// TestDurableSlowWatcherTenPercent: `relay all` with a durable channel and
// a small client budget (64 KiB). `relay send --rate 3000` writes 6,000
// lines of 1 KB (6 MB: more than the kernel's socket buffers hold) while a
// watcher with a 16 KiB receive buffer reads at 10% of that rate. It is not
// cut: it falls behind, catches up from the ring and the stream
// (relay_fanout_catchups_total moves, no slow consumer), and ends with every
// line, in order, once.
func TestDurableSlowWatcherTenPercent(t *testing.T) {
	t.Parallel()
	hs, httpAddr, _ := startDurableAll(t, "slow.>",
		"RELAY_FANOUT_CLIENT_QUEUE_BYTES=65536",
		// Megabytes wait in socket buffers ahead of this reader; on a loaded
		// machine one write may wait seconds for room. A single write held
		// for the write timeout is the stuck-reader rule (1011), not this one.
		"RELAY_FANOUT_WRITE_TIMEOUT=60s")

	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
		return err
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws/slow.a", &websocket.DialOptions{HTTPClient: client})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	waitFanoutConnections(t, "http://"+httpAddr+"/metrics", 1)

	const n, rate = 6000, 3000
	pad := strings.Repeat("x", 1000)
	send := exec.Command(relayBin, "send", "--count", strconv.Itoa(n), "--rate", strconv.Itoa(rate),
		"--template", "{{.N}} "+pad, hs, "slow.a")
	sent := make(chan error, 1)
	go func() {
		out, err := send.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		sent <- err
	}()
	start := time.Now()
	for i := 1; i <= n; i++ {
		// 10% of the sender's rate: message i is read no earlier than i/(rate/10) s in.
		if d := time.Until(start.Add(time.Duration(i) * time.Second / (rate / 10))); d > 0 {
			time.Sleep(d)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, b, err := c.Read(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("message %d: %v (a slow watcher of a durable channel must not be cut)", i, err)
		}
		if want := strconv.Itoa(i) + " " + pad; string(b) != want {
			t.Fatalf("message %d is %.12q…, want %.12q…", i, b, want)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("relay send: %v", err)
	}
	body := scrape("http://" + httpAddr + "/metrics")
	if v := metricSum(body, "relay_fanout_catchups_total"); v < 1 {
		t.Errorf("relay_fanout_catchups_total = %v: the watcher never fell behind, so this showed nothing", v)
	}
	if v := metricSum(body, `relay_fanout_slow_consumers_total{kind="client"}`); v != 0 {
		t.Errorf("slow consumers cut: %v", v)
	}
	t.Logf("read %d lines at 10%% of %d/s in %s; catch-ups %v, replays from the stream %v", n, rate,
		time.Since(start).Round(time.Second), metricSum(body, "relay_fanout_catchups_total"),
		metricSum(body, `relay_fanout_replays_total{source="stream"}`))
}
