package ingest

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tcpproto"
	"github.com/relaydev/relay/shared/testutil"
)

// startControlIngest runs ingest with control channels "dev.>" on listeners.
func startControlIngest(t testing.TB, srv *server.Server, listeners string, queue int, refresh time.Duration) *harness {
	t.Helper()
	return startControlIngestDurable(t, srv, listeners, queue, refresh, nil)
}

func startControlIngestDurable(t testing.TB, srv *server.Server, listeners string, queue int, refresh time.Duration, stream *durable.Stream) *harness {
	t.Helper()
	return startControlIngestCfg(t, srv, defaultConfig(listeners), queue, refresh, stream)
}

func startControlIngestCfg(t testing.TB, srv *server.Server, cfg config.Ingest, queue int, refresh time.Duration, stream *durable.Stream) *harness {
	t.Helper()
	if srv == nil {
		srv = testutil.NATSServer(t)
	}
	return runIngest(t, srv, Options{
		Config:  cfg,
		NATS:    testutil.Connect(t, srv, nats.ReconnectBufSize(-1)),
		Control: config.Control{ControlChannels: []string{"dev.>"}, IngestControlQ: queue, PresenceRefresh: refresh},
		Durable: stream,
	})
}

// presenceWatch collects presence events of channel.
type presenceWatch struct {
	sub *nats.Subscription
}

func watchPresence(t *testing.T, srv *server.Server, channel string) *presenceWatch {
	return &presenceWatch{sub: subscribe(t, srv, "relay.ev."+channel)}
}

// until reads events until one reports want senders.
func (p *presenceWatch) until(t *testing.T, want int) subjects.Presence {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := p.sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no presence event with %d senders: %v", want, err)
		}
		var ev subjects.Presence
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("presence event %q: %v", m.Data, err)
		}
		if ev.Senders == want {
			return ev
		}
	}
}

// handshakeSender connects to a handshake listener and completes the
// handshake for channel.
func handshakeSender(t *testing.T, addr, channel string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "%s\n", channel)
	if got := readLine(t, c, br); got != "+OK\n" {
		t.Fatalf("handshake: %q", got)
	}
	return c, br
}

// TestControlFramings: a control message reaches every sender of the
// channel, framed for its listener (line, len32, raw), and none of another
// channel's senders.
func TestControlFramings(t *testing.T) {
	t.Parallel()
	h := startControlIngest(t, nil, "127.0.0.1:0=*/line,127.0.0.1:0=*/len32,127.0.0.1:0=*/raw", 16, time.Minute)
	pw := watchPresence(t, h.srv, "dev.a")
	line, lineBr := handshakeSender(t, h.addr(0), "dev.a")
	pw.until(t, 1)
	l32, l32Br := handshakeSender(t, h.addr(1), "dev.a")
	pw.until(t, 2)
	raw, rawBr := handshakeSender(t, h.addr(2), "dev.a")
	pw.until(t, 3)
	other, otherBr := handshakeSender(t, h.addr(0), "dev.b")
	watchPresence(t, h.srv, "dev.b") // (its event may be gone already; dev.b gets no control message anyway)

	pub := testutil.Connect(t, h.srv)
	for _, msg := range []string{"reboot", "", "bin\x00\xff"} {
		if err := pub.Publish("relay.ctl.dev.a", []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	pub.Flush()

	if got := readN(t, line, lineBr, len("reboot\n\nbin\x00\xff\n")); got != "reboot\n\nbin\x00\xff\n" {
		t.Errorf("line sender got %q", got)
	}
	want := "\x00\x00\x00\x06reboot" + "\x00\x00\x00\x00" + "\x00\x00\x00\x05bin\x00\xff"
	if got := readN(t, l32, l32Br, len(want)); got != want {
		t.Errorf("len32 sender got %q", got)
	}
	if got := readN(t, raw, rawBr, len("rebootbin\x00\xff")); got != "rebootbin\x00\xff" {
		t.Errorf("raw sender got %q", got)
	}
	other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := otherBr.ReadByte(); err == nil {
		t.Errorf("a sender of another channel got byte %q", b)
	}
	if got := ptestutil.ToFloat64(h.m.ControlMessages.With(metrics.ControlWritten)); got != 9 {
		t.Errorf("written = %v, want 9 (3 messages x 3 senders)", got)
	}
}

func readN(t *testing.T, c net.Conn, br *bufio.Reader, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// TestControlNonReaderSlowsNobody: a sender that never reads its control
// messages loses the newest (counted) but keeps sending at full speed, and
// another sender of the same channel gets every control message.
func TestControlNonReaderSlowsNobody(t *testing.T) {
	t.Parallel()
	const queue = 8
	h := startControlIngest(t, nil, "127.0.0.1:0=*/line", queue, time.Minute)
	pw := watchPresence(t, h.srv, "dev.x")
	data := subscribe(t, h.srv, "relay.ch.dev.x")

	stuck, stuckBr := handshakeSender(t, h.addr(0), "dev.x")
	pw.until(t, 1)
	reader, readerBr := handshakeSender(t, h.addr(0), "dev.x")
	pw.until(t, 2)
	_ = stuckBr // never read

	// The reader reads everything, in order. The publisher keeps at most
	// half a queue in flight to it (its own queue is bounded too), while the
	// stuck sender's queue overflows.
	const n = 20000
	payload := strings.Repeat("c", 1000)
	got := make(chan error, 1)
	var read atomic.Int64
	go func() {
		reader.SetReadDeadline(time.Now().Add(120 * time.Second))
		for i := range n {
			read.Store(int64(i))
			line, err := readerBr.ReadString('\n')
			if err != nil {
				got <- fmt.Errorf("reader: message %d: %v", i, err)
				return
			}
			if want := fmt.Sprintf("%d %s\n", i, payload); line != want {
				got <- fmt.Errorf("reader: message %d = %.20q", i, line)
				return
			}
		}
		got <- nil
	}()

	pub := testutil.Connect(t, h.srv)
	start := time.Now()
	for i := range n {
		for int64(i)-read.Load() > queue/2 {
			select {
			case err := <-got:
				t.Fatalf("reader stopped: %v", err)
			case <-time.After(50 * time.Microsecond):
			}
		}
		if err := pub.Publish("relay.ctl.dev.x", fmt.Appendf(nil, "%d %s", i, payload)); err != nil {
			t.Fatal(err)
		}
		if i%(queue/2) == 0 {
			pub.Flush()
		}
	}
	pub.Flush()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	readerTook := time.Since(start)

	// Meanwhile the stuck sender still sends: its upstream is not held by
	// the control messages it does not read.
	const up = 20000
	upStart := time.Now()
	w := bufio.NewWriter(stuck)
	for i := range up {
		fmt.Fprintf(w, "up %d\n", i)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range up {
		m, err := data.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("stuck sender's message %d not published: %v", i, err)
		}
		if want := fmt.Sprintf("up %d", i); string(m.Data) != want {
			t.Fatalf("message %d = %q, want %q", i, m.Data, want)
		}
	}
	upTook := time.Since(upStart)
	// What the stuck sender's writer still holds is counted as dropped when
	// the sender goes.
	stuck.Close()
	var written, dropped float64
	testutil.Eventually(t, 20*time.Second, func() error {
		dropped = ptestutil.ToFloat64(h.m.ControlMessages.With(metrics.ControlDropped))
		written = ptestutil.ToFloat64(h.m.ControlMessages.With(metrics.ControlWritten))
		if written+dropped != 2*n {
			return fmt.Errorf("written %v + dropped %v != %d", written, dropped, 2*n)
		}
		return nil
	})
	if dropped == 0 {
		t.Errorf("no control message counted as dropped for the sender that does not read")
	}
	t.Logf("%d control messages of 1000 B: the reading sender got all %d in %s; the stuck sender: %v written into its socket buffers, %v dropped (queue %d); it then sent %d lines upstream, all published in order, in %s",
		n, n, readerTook.Round(time.Millisecond), written-n, dropped, queue, up, upTook.Round(time.Millisecond))
}

// TestPresenceArrivalsAndDepartures: every arrival and departure is
// announced with the pod's count, and the count is repeated.
func TestPresenceArrivalsAndDepartures(t *testing.T) {
	t.Parallel()
	h := startControlIngest(t, nil, "127.0.0.1:0=*/line,127.0.0.1:0=fixed.one/line", 4, 200*time.Millisecond)
	pw := watchPresence(t, h.srv, "dev.p")
	a, _ := handshakeSender(t, h.addr(0), "dev.p")
	ev := pw.until(t, 1)
	if ev.Pod == "" || ev.TTLMillis != 600 {
		t.Errorf("event %+v: want a pod id and ttl 3 x 200ms", ev)
	}
	b, _ := handshakeSender(t, h.addr(0), "dev.p")
	pw.until(t, 2)
	a.Close()
	pw.until(t, 1)
	// Repeated while unchanged (the refresh).
	pw.until(t, 1)
	b.Close()
	pw.until(t, 0)

	// A fixed listener's senders count too.
	fw := watchPresence(t, h.srv, "fixed.one")
	dial(t, h.addr(1))
	fw.until(t, 1)
}

// TestControlBetweenAcks: on a durable channel with +ack, +ACK lines and
// control messages share the connection; every line the sender reads is
// whole (a +ACK line or a control message), the control messages arrive in
// order, and the last +ACK counts every message.
func TestControlBetweenAcks(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	stream, _ := durableStream(t, srv, "dev.>")
	h := startControlIngestDurable(t, srv, "127.0.0.1:0=*/line", 1<<16, time.Minute, stream)
	pw := watchPresence(t, srv, "dev.d")
	c := dial(t, h.addr(0))
	io.WriteString(c, "dev.d +ack\n")
	pw.until(t, 1)

	const n, ctl = 5000, 2000
	pub := testutil.Connect(t, srv)
	go func() {
		for i := range ctl {
			pub.Publish("relay.ctl.dev.d", fmt.Appendf(nil, "ctl %d", i))
			if i%100 == 0 {
				pub.Flush()
				time.Sleep(time.Millisecond) // spread over the acks
			}
		}
		pub.Flush()
	}()
	go func() {
		w := bufio.NewWriter(c)
		for i := range n {
			fmt.Fprintf(w, "m %d\n", i)
			if i%500 == 0 {
				w.Flush()
				time.Sleep(5 * time.Millisecond)
			}
		}
		w.Flush()
	}()
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	next, lastAck := 0, uint64(0)
	for next < ctl || lastAck < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d control messages and +ACK %d: %v", next, lastAck, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch r := tcpproto.ParseReply(line); {
		case line == tcpproto.OK:
		case r.Kind == tcpproto.ReplyAck:
			if r.Acked < lastAck {
				t.Fatalf("+ACK %d after +ACK %d", r.Acked, lastAck)
			}
			lastAck = r.Acked
		case line == fmt.Sprintf("ctl %d", next):
			next++
		default:
			t.Fatalf("line %q: neither a +ACK nor control message %d", line, next)
		}
	}
}

// TestControlTLSNonReader: over TLS, where a write that times out leaves
// the connection unable to write for good, a sender that does not read
// still slows nobody: the reading sender gets everything, the stuck one
// keeps publishing, and every control message is counted written or dropped.
func TestControlTLSNonReader(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t, "relay test CA")
	cert, key := ca.Issue(t, "localhost")
	dir := t.TempDir()
	cfg := defaultConfig("127.0.0.1:0=*/line;tls")
	cfg.TLSCertFile = testutil.WriteFile(t, dir, "tls.crt", cert)
	cfg.TLSKeyFile = testutil.WriteFile(t, dir, "tls.key", key)
	const queue = 8
	h := startControlIngestCfg(t, nil, cfg, queue, time.Minute, nil)
	pw := watchPresence(t, h.srv, "dev.t")
	data := subscribe(t, h.srv, "relay.ch.dev.t")
	dialTLS := func() (net.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", h.addr(0), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "dev.t\n")
		br := bufio.NewReader(c)
		if got := readLine(t, c, br); got != "+OK\n" {
			t.Fatalf("handshake: %q", got)
		}
		return c, br
	}
	stuck, _ := dialTLS()
	pw.until(t, 1)
	reader, readerBr := dialTLS()
	pw.until(t, 2)

	const n = 10000
	payload := strings.Repeat("c", 1000)
	var read atomic.Int64
	got := make(chan error, 1)
	go func() {
		reader.SetReadDeadline(time.Now().Add(120 * time.Second))
		for i := range n {
			read.Store(int64(i))
			line, err := readerBr.ReadString('\n')
			if err != nil || line != fmt.Sprintf("%d %s\n", i, payload) {
				got <- fmt.Errorf("reader: message %d: %.20q %v", i, line, err)
				return
			}
		}
		got <- nil
	}()
	pub := testutil.Connect(t, h.srv)
	for i := range n {
		for int64(i)-read.Load() > queue/2 {
			select {
			case err := <-got:
				t.Fatalf("reader stopped: %v", err)
			case <-time.After(50 * time.Microsecond):
			}
		}
		pub.Publish("relay.ctl.dev.t", fmt.Appendf(nil, "%d %s", i, payload))
		if i%(queue/2) == 0 {
			pub.Flush()
		}
	}
	pub.Flush()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(stuck, "still sending\n")
	if m, err := data.NextMsg(20 * time.Second); err != nil || string(m.Data) != "still sending" {
		t.Fatalf("the stuck sender's line: %v %v", m, err)
	}
	stuck.Close()
	testutil.Eventually(t, 20*time.Second, func() error {
		w := ptestutil.ToFloat64(h.m.ControlMessages.With(metrics.ControlWritten))
		d := ptestutil.ToFloat64(h.m.ControlMessages.With(metrics.ControlDropped))
		if w+d != 2*n || d == 0 {
			return fmt.Errorf("written %v + dropped %v, want %d with some dropped", w, d, 2*n)
		}
		return nil
	})
}

// TestPresenceEncoding: the hand-written encoding reads back as
// subjects.Presence, with this host's pod id.
func TestPresenceEncoding(t *testing.T) {
	t.Parallel()
	r := newRouter(nil, subjects.Mapper{}, testutil.Logger(t), metrics.New().Ingest, config.Control{PresenceRefresh: time.Second})
	var ev subjects.Presence
	b := appendPresence(nil, r.pod, 42, 3000)
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if ev != (subjects.Presence{Pod: r.pod, Senders: 42, TTLMillis: 3000}) {
		t.Fatalf("%s read back as %+v", b, ev)
	}
}
