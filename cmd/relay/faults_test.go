package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/natsconn"
	"github.com/relaydev/relay/shared/testutil"
)

// The tests in this file break NATS or stop relay under load and count, from
// outside, what senders wrote, what relay told them it accepted and what
// watchers received: loss may happen (core channels are at-most-once) but
// never silently.

// pacedSender writes numbered lines "<name> <i>\n" over plain TCP at a
// steady rate until it is stopped, a write fails or the server answers;
// then it reads the server's last line.
type pacedSender struct {
	name    string
	written atomic.Int64 // lines written in full
	reply   chan string  // the server's line, "" when none came
	stopped chan struct{}
	once    sync.Once
}

func startSender(t *testing.T, addr, name string, perSecond int) *pacedSender {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &pacedSender{name: name, reply: make(chan string, 1), stopped: make(chan struct{})}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, _ := bufio.NewReader(c).ReadString('\n')
		s.reply <- line
	}()
	go func() {
		const tick = 10 * time.Millisecond
		perTick := max(1, perSecond/int(time.Second/tick))
		next := 0
		t := time.NewTicker(tick)
		defer t.Stop()
		var b bytes.Buffer
		for {
			select {
			case <-s.stopped:
				c.(*net.TCPConn).CloseWrite()
				return
			case <-answered:
				return
			case <-t.C:
			}
			b.Reset()
			for i := range perTick {
				fmt.Fprintf(&b, "%s %d\n", name, next+i)
			}
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			n, err := c.Write(b.Bytes())
			full := bytes.Count(b.Bytes()[:n], []byte("\n"))
			next += full
			s.written.Add(int64(full))
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *pacedSender) stop() { s.once.Do(func() { close(s.stopped) }) }

// waitReply returns the server's last line to this sender.
func (s *pacedSender) waitReply(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case r := <-s.reply:
		s.reply <- r
		return r
	case <-time.After(timeout):
		t.Fatalf("sender %s: no reply from relay within %s", s.name, timeout)
		return ""
	}
}

// accepted parses "-ERR <what>: N messages accepted".
func accepted(t *testing.T, reply, what string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(reply, "-ERR "+what+": %d messages accepted\n", &n); err != nil {
		t.Fatalf("reply %q, want \"-ERR %s: N messages accepted\"", reply, what)
	}
	return n
}

// metricValue returns the value of the first sample whose line starts with
// series (a name, or a name with labels) on the /metrics page at url, or -1.
func metricValue(t *testing.T, url, series string) float64 {
	t.Helper()
	for line := range strings.Lines(metricsText(t, url)) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// prefixOf checks that msgs holds, per sender, lines 0, 1, 2, ... with no
// gap and returns how many it holds of each.
func prefixOf(msgs []string) (map[string]int, error) {
	next := map[string]int{}
	for _, m := range msgs {
		var sender string
		var seq int
		if _, err := fmt.Sscanf(m, "%s %d", &sender, &seq); err != nil {
			return nil, fmt.Errorf("unexpected message %q", m)
		}
		if seq != next[sender] {
			return nil, fmt.Errorf("sender %s: got %d, want %d", sender, seq, next[sender])
		}
		next[sender]++
	}
	return next, nil
}

// status returns url's HTTP status, 0 when it does not answer.
func status(url string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// dialRefused dials a WebSocket that relay is expected to accept and close
// at once; it returns the close status and how long that took.
func dialRefused(t *testing.T, url string) (websocket.StatusCode, string, time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial %s: HTTP %d %v, want 101 then a close frame", url, code, err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("read: %v, want a close frame", err)
	}
	return ce.Code, ce.Reason, time.Since(start)
}

// TestSIGTERMAllDeliversEveryAcceptedLine (issue 11, finding 1): `relay
// all` gets SIGTERM while 4 senders stream and 3 watchers read. Each sender
// is told how many of its lines relay accepted; every watcher receives
// exactly those, in order, and then 1001 — ingest's drain reaches the
// watchers before the fanout closes them.
func TestSIGTERMAllDeliversEveryAcceptedLine(t *testing.T) {
	t.Parallel()
	fixed, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	const grace = 10 * time.Second
	p := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=term/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_SHUTDOWN_GRACE=" + grace.String(),
		burstQueue,
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")

	var watchers []*wsReceiver
	for range 3 {
		watchers = append(watchers, dialWS(t, "ws://"+httpAddr+"/ws/term"))
	}
	waitFanoutConnections(t, "http://"+httpAddr+"/metrics", 3)
	var senders []*pacedSender
	for i := range 4 {
		senders = append(senders, startSender(t, fixed, fmt.Sprintf("s%d", i), 2000))
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, w := range watchers {
			if w.count() < 4000 {
				return fmt.Errorf("watcher %d has %d lines", i, w.count())
			}
		}
		return nil
	})

	p.cmd.Process.Signal(syscall.SIGTERM)
	want := map[string]int{}
	written, total := 0, 0
	for _, s := range senders {
		n := accepted(t, s.waitReply(t, 3*grace), "server shutting down")
		want[s.name] = n
		total += n
		written += int(s.written.Load())
	}
	if code := p.wait(t, 3*grace); code != 0 {
		t.Fatalf("relay all exited %d after SIGTERM", code)
	}
	for i, w := range watchers {
		select {
		case <-w.closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("watcher %d not closed", i)
		}
		if w.status != websocket.StatusGoingAway {
			t.Errorf("watcher %d: close %d, want 1001", i, w.status)
		}
		if err := checkOrder(w.messages(), want); err != nil {
			t.Errorf("watcher %d: %v (accepted per sender %v)", i, err, want)
		}
	}
	t.Logf("relay all + SIGTERM, 4 senders x 2k lines/s, 3 watchers: written %d, accepted %d (told to each sender), each watcher received %d, lost 0 of the accepted",
		written, total, watchers[0].count())
}

// natsChildEnv makes the test binary a NATS server (see TestMain): a
// separate process the freeze test can SIGSTOP.
const natsChildEnv = "RELAYTEST_NATS_SERVER_LISTEN"

// runNATSChild serves NATS on addr until stdin closes (the parent test
// exited or closed it).
func runNATSChild(addr string) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: addr})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	srv.Shutdown()
	srv.WaitForShutdown()
	os.Exit(0)
}

// startNATSChild runs a NATS server on addr in a child process.
func startNATSChild(t *testing.T, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), natsChildEnv+"="+addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("NATS child: %q", line)
	}
	return cmd
}

// splitTiers runs `relay ingest` and `relay fanout` against natsURL and
// returns the sender address, the fanout address and the ingest HTTP
// address.
func splitTiers(t *testing.T, natsURL string, env ...string) (sendAddr, fanoutAddr, ingestHTTP string, ingest, fanout *proc) {
	t.Helper()
	sendAddr, ingestHTTP, fanoutAddr = freePort(t), freePort(t), freePort(t)
	common := append([]string{"RELAY_NATS_URL=" + natsURL, "RELAY_LOG_LEVEL=debug"}, env...)
	ingest = startRelay(t, append(common, "RELAY_INGEST_LISTENERS="+sendAddr+"=f/line", "RELAY_INGEST_HTTP_ADDR="+ingestHTTP), "ingest")
	fanout = startRelay(t, append(common, "RELAY_FANOUT_ADDR="+fanoutAddr), "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")
	return sendAddr, fanoutAddr, ingestHTTP, ingest, fanout
}

// TestSplitNATSOutage (issue 11, finding 2): NATS goes away under a
// streaming sender in split mode. Watchers are closed with 1012 and new
// upgrades get 1012 at once; both tiers turn unready; ingest accepts nothing
// it cannot hand to NATS, so after RELAY_INGEST_OUTAGE_HOLD the sender is
// told exactly how many lines were accepted, relay_ingest_messages_total
// equals that number, and watchers got exactly those lines up to their 1012.
// When NATS returns nothing is replayed: new lines flow and nobody is cut
// with 1008.
func TestSplitNATSOutage(t *testing.T) {
	t.Parallel()
	natsAddr := freePort(t)
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: natsAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	const hold = 3 * time.Second
	sendAddr, fanoutAddr, ingestHTTP, ingest, _ := splitTiers(t, "nats://"+natsAddr, "RELAY_INGEST_OUTAGE_HOLD="+hold.String())
	ingestMetrics, fanoutMetrics := "http://"+ingestHTTP+"/metrics", "http://"+fanoutAddr+"/metrics"

	w := dialWS(t, "ws://"+fanoutAddr+"/ws/f")
	waitFanoutConnections(t, fanoutMetrics, 1)
	s := startSender(t, sendAddr, "a", 1000)
	testutil.Eventually(t, 30*time.Second, func() error {
		if w.count() < 1000 {
			return fmt.Errorf("watcher has %d lines", w.count())
		}
		return nil
	})

	srv.Shutdown()
	srv.WaitForShutdown()
	down := time.Now()
	select {
	case <-w.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("watcher not closed after NATS went away")
	}
	if w.status != websocket.StatusServiceRestart {
		t.Errorf("watcher closed with %d, want 1012", w.status)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if a, b := status("http://"+ingestHTTP+"/readyz"), status("http://"+fanoutAddr+"/readyz"); a != 503 || b != 503 {
			return fmt.Errorf("readyz with NATS down: ingest %d, fanout %d, want 503", a, b)
		}
		return nil
	})
	code, reason, took := dialRefused(t, "ws://"+fanoutAddr+"/ws/f")
	if code != websocket.StatusServiceRestart {
		t.Errorf("upgrade while NATS is down: close %d %q, want 1012", code, reason)
	}
	t.Logf("upgrade while NATS is down: 101 then close %d %q after %s", code, reason, took.Round(time.Millisecond))

	n := accepted(t, s.waitReply(t, 30*time.Second), "upstream unavailable")
	told := time.Since(down)
	written := int(s.written.Load())
	// N counts what NATS confirmed (round trips every 100 ms); a few more
	// may have been published just before NATS went, and reached watchers
	// or not: the sender resends from N+1, watchers were told with 1012.
	published := int(metricValue(t, ingestMetrics, "relay_ingest_messages_total"))
	if n > published || published > written {
		t.Errorf("accepted %d, published %d, written %d: want accepted <= published <= written", n, published, written)
	}
	if got := metricValue(t, ingestMetrics, `relay_ingest_unpublished_total{reason="upstream_unavailable"}`); got != 1 {
		t.Errorf(`relay_ingest_unpublished_total{reason="upstream_unavailable"} = %v, want 1`, got)
	}
	got, err := prefixOf(w.messages())
	if err != nil {
		t.Fatalf("watcher: %v", err)
	}
	if got["a"] > published {
		t.Fatalf("watcher got %d lines, more than the %d published", got["a"], published)
	}

	// NATS returns on the same port: both tiers recover, nothing accepted
	// during the outage is replayed, new lines reach a new watcher.
	srv2, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: natsAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")
	w2 := dialWS(t, "ws://"+fanoutAddr+"/ws/f")
	waitFanoutConnections(t, fanoutMetrics, 1)
	if err := sendRaw(sendAddr, "", lines("b", 500)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if w2.count() < 500 {
			return fmt.Errorf("new watcher has %d of 500", w2.count())
		}
		return nil
	})
	if err := checkOrder(w2.messages(), map[string]int{"b": 500}); err != nil {
		t.Errorf("new watcher: %v (anything from sender a would be a replay)", err)
	}
	if got := metricValue(t, ingestMetrics, "relay_ingest_messages_total"); got != float64(published+500) {
		t.Errorf("relay_ingest_messages_total = %v, want %d: nothing may be published but the new lines", got, published+500)
	}
	if v := metricValue(t, fanoutMetrics, `relay_fanout_disconnects_total{reason="slow_consumer"}`); v > 0 {
		t.Errorf("%v watchers cut as slow consumers", v)
	}
	if !strings.Contains(ingest.stderr.String(), "nats disconnected") {
		t.Error("ingest did not log the NATS loss")
	}
	t.Logf("NATS down under 1k lines/s: written %d, published %d, accepted %d (told after %s, hold %s), watcher received %d then 1012; after NATS returned: 500 of 500 new lines, 0 replayed",
		written, published, n, told.Round(100*time.Millisecond), hold, got["a"])
}

// TestNATSFreezeDetected (issue 11, finding 3): the NATS server process is
// stopped (SIGSTOP) under a streaming sender. With the default ping settings
// both tiers notice within 15 s: /readyz turns 503, the watcher is closed
// with 1012 and ingest stops accepting. After SIGCONT both recover; the
// sender, whose last lines went into the frozen connection, is told how many
// were accepted, and a new sender's lines flow again.
func TestNATSFreezeDetected(t *testing.T) {
	t.Parallel()
	natsAddr := freePort(t)
	child := startNATSChild(t, natsAddr)
	// burstQueue: when NATS returns, ingest reads the sender's backlog (its
	// kernel buffers) at full speed, a burst of thousands of lines that the
	// default client queue of 1024 messages does not survive (issue 11,
	// finding 4, is that fix); here the subject is the freeze.
	// The outage hold (10 s by default) starts at the first unconfirmed
	// flush, a few seconds into the freeze, and the freeze is noticed after
	// 12-14 s: with the default the held sender was sometimes closed just
	// before the check below that it is held. The hold is not this test's
	// subject, so it outlasts the freeze.
	sendAddr, fanoutAddr, ingestHTTP, ingest, fanout := splitTiers(t, "nats://"+natsAddr, burstQueue, "RELAY_INGEST_OUTAGE_HOLD=2m")
	ingestMetrics, fanoutMetrics := "http://"+ingestHTTP+"/metrics", "http://"+fanoutAddr+"/metrics"

	w := dialWS(t, "ws://"+fanoutAddr+"/ws/f")
	waitFanoutConnections(t, fanoutMetrics, 1)
	s := startSender(t, sendAddr, "a", 500)
	defer s.stop()
	testutil.Eventually(t, 30*time.Second, func() error {
		if w.count() < 500 {
			return fmt.Errorf("watcher has %d lines", w.count())
		}
		return nil
	})

	if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	writtenAtFreeze := s.written.Load()
	var ingestNoticed, fanoutNoticed time.Duration
	testutil.Eventually(t, 40*time.Second, func() error {
		if ingestNoticed == 0 && status("http://"+ingestHTTP+"/readyz") == 503 {
			ingestNoticed = time.Since(frozen)
		}
		if fanoutNoticed == 0 && status("http://"+fanoutAddr+"/readyz") == 503 {
			fanoutNoticed = time.Since(frozen)
		}
		if ingestNoticed == 0 || fanoutNoticed == 0 {
			return errors.New("a tier is still ready with NATS frozen")
		}
		return nil
	})
	select {
	case <-w.closed:
	case <-time.After(30 * time.Second):
		t.Fatal("watcher not closed with NATS frozen")
	}
	if w.status != websocket.StatusServiceRestart {
		t.Errorf("watcher closed with %d, want 1012", w.status)
	}
	// Default RELAY_NATS_PING_INTERVAL x (RELAY_NATS_MAX_PINGS_OUTSTANDING + 1)
	// is 12 s; the issue asks for 15 s. Only a machine stalled for seconds
	// could miss it.
	if ingestNoticed > 15*time.Second || fanoutNoticed > 15*time.Second {
		t.Errorf("freeze noticed after %s (ingest) and %s (fanout), want within 15s", ingestNoticed, fanoutNoticed)
	}
	for name, p := range map[string]*proc{"ingest": ingest, "fanout": fanout} {
		if !strings.Contains(p.stderr.String(), "stale connection") {
			t.Errorf("%s did not log the stale NATS connection", name)
		}
	}
	// Ingest now holds the sender: nothing more is counted as published.
	testutil.Eventually(t, 20*time.Second, func() error {
		if v := metricValue(t, ingestMetrics, "relay_ingest_senders_held"); v != 1 {
			return fmt.Errorf("relay_ingest_senders_held = %v, want 1", v)
		}
		return nil
	})
	publishedAtDetection := metricValue(t, ingestMetrics, "relay_ingest_messages_total")
	deliveredBeforeFreeze := w.count()

	if err := child.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")
	// The lines published into the frozen connection were never confirmed,
	// so once NATS answers on a new connection the sender is told how many
	// were accepted instead of carrying on past a gap.
	reply := s.waitReply(t, 30*time.Second)
	n := accepted(t, reply, "upstream unavailable")
	if int64(n) > s.written.Load() {
		t.Errorf("told %d accepted, but only %d were written", n, s.written.Load())
	}
	w2 := dialWS(t, "ws://"+fanoutAddr+"/ws/f")
	s2 := startSender(t, sendAddr, "b", 500)
	defer s2.stop()
	testutil.Eventually(t, 30*time.Second, func() error {
		if w2.count() < 200 {
			return fmt.Errorf("watcher after SIGCONT has %d lines", w2.count())
		}
		return nil
	})
	if _, err := prefixOf(w.messages()); err != nil {
		t.Errorf("watcher before the freeze: %v", err)
	}
	if v := metricValue(t, fanoutMetrics, `relay_fanout_disconnects_total{reason="slow_consumer"}`); v > 0 {
		t.Errorf("%v watchers cut as slow consumers", v)
	}
	t.Logf("NATS frozen under 500 lines/s: noticed after %s (ingest) / %s (fanout); written before the freeze %d, published by detection %v, watcher received %d then 1012; after SIGCONT lines flow again",
		ingestNoticed.Round(100*time.Millisecond), fanoutNoticed.Round(100*time.Millisecond), writtenAtFreeze, publishedAtDetection, deliveredBeforeFreeze)
}

// TestSplitIngestSIGTERMDeliversEveryAcceptedLine (issue 11, finding 1,
// split mode): `relay ingest` gets SIGTERM while 2 senders stream; the
// fanout, another process, keeps running. Each sender is told N accepted
// and the watchers receive exactly those N lines of each, in order.
func TestSplitIngestSIGTERMDeliversEveryAcceptedLine(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	sendAddr, fanoutAddr, _, ingest, _ := splitTiers(t, srv.ClientURL(), burstQueue)
	var watchers []*wsReceiver
	for range 2 {
		watchers = append(watchers, dialWS(t, "ws://"+fanoutAddr+"/ws/f"))
	}
	waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 2)
	var senders []*pacedSender
	for i := range 2 {
		senders = append(senders, startSender(t, sendAddr, fmt.Sprintf("s%d", i), 2000))
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, w := range watchers {
			if w.count() < 2000 {
				return fmt.Errorf("watcher %d has %d lines", i, w.count())
			}
		}
		return nil
	})
	ingest.cmd.Process.Signal(syscall.SIGTERM)
	want := map[string]int{}
	written, total := 0, 0
	for _, s := range senders {
		n := accepted(t, s.waitReply(t, time.Minute), "server shutting down")
		want[s.name] = n
		total += n
		written += int(s.written.Load())
	}
	if code := ingest.wait(t, time.Minute); code != 0 {
		t.Fatalf("relay ingest exited %d after SIGTERM", code)
	}
	for i, w := range watchers {
		testutil.Eventually(t, 30*time.Second, func() error {
			if w.count() < total {
				return fmt.Errorf("watcher %d has %d of the %d accepted", i, w.count(), total)
			}
			return nil
		})
		if err := checkOrder(w.messages(), want); err != nil {
			t.Errorf("watcher %d: %v (accepted per sender %v)", i, err, want)
		}
	}
	t.Logf("relay ingest + SIGTERM (split mode), 2 senders x 2k lines/s, 2 watchers on a running fanout: written %d, accepted %d, each watcher received %d",
		written, total, watchers[0].count())
}
