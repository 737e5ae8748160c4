package ingest

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/natsconn"
	"github.com/relaydev/relay/shared/testutil"
)

type harness struct {
	srv  *server.Server
	ing  *Server
	m    *metrics.Ingest
	stop func() error
}

func defaultConfig(listeners string) config.Ingest {
	return config.Ingest{
		Listeners:        config.MustParseListeners(listeners),
		MaxMessage:       65536,
		HandshakeTimeout: 5 * time.Second,
		KeepAlive:        30 * time.Second,
		MaxConnections:   100,
		ReadBuffer:       32768,
	}
}

// startIngest runs an ingest Server against srv (a new real NATS server
// when nil) and stops it when the test ends.
func startIngest(t *testing.T, srv *server.Server, cfg config.Ingest, natsOpts ...nats.Option) *harness {
	t.Helper()
	return startIngestOpts(t, srv, cfg, nil, nil, natsOpts...)
}

// startIngestAuth is startIngest with token checks by a.
func startIngestAuth(t *testing.T, srv *server.Server, cfg config.Ingest, a *auth.Authenticator, natsOpts ...nats.Option) *harness {
	t.Helper()
	return startIngestOpts(t, srv, cfg, a, nil, natsOpts...)
}

// startIngestWith is startIngest with a durable channels' stream (nil: none).
func startIngestWith(t testing.TB, srv *server.Server, cfg config.Ingest, stream *durable.Stream, natsOpts ...nats.Option) *harness {
	t.Helper()
	return startIngestOpts(t, srv, cfg, nil, stream, natsOpts...)
}

func startIngestOpts(t testing.TB, srv *server.Server, cfg config.Ingest, a *auth.Authenticator, stream *durable.Stream, natsOpts ...nats.Option) *harness {
	t.Helper()
	if srv == nil {
		srv = testutil.NATSServer(t)
	}
	return runIngest(t, srv, Options{
		Config: cfg,
		// As relay connects ingest: no reconnect buffer (natsconn.Options.NoReconnectBuffer).
		NATS:    testutil.Connect(t, srv, append([]nats.Option{nats.ReconnectBufSize(-1)}, natsOpts...)...),
		Durable: stream,
		Auth:    a,
	})
}

// runIngest runs a Server with o (prefix "relay", a 5 s grace, the test's
// logger and fresh metrics unless o sets them) on srv until the test ends;
// harness.stop stops it earlier.
func runIngest(t testing.TB, srv *server.Server, o Options) *harness {
	t.Helper()
	o.SubjectPrefix = cmp.Or(o.SubjectPrefix, "relay")
	o.ShutdownGrace = cmp.Or(o.ShutdownGrace, 5*time.Second)
	if o.Logger == nil {
		o.Logger = testutil.Logger(t)
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New().Ingest
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return &harness{srv: srv, ing: s, m: o.Metrics, stop: stop}
}

func (h *harness) addr(i int) string { return h.ing.Addrs()[i].String() }

// subscribe collects every message on subject from a separate NATS client.
func subscribe(t *testing.T, srv *server.Server, subject string) *nats.Subscription {
	t.Helper()
	nc := testutil.Connect(t, srv)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readLine reads one reply line from the server, with a deadline.
func readLine(t *testing.T, c net.Conn, br *bufio.Reader) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading reply: %v (got %q)", err, line)
	}
	return line
}

// expectClosed checks that the server closed the connection.
func expectClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(br); err != nil {
		t.Fatalf("connection not closed by server: %v (read %q)", err, rest)
	}
}

func TestConcurrentSendersKeepOrder(t *testing.T) {
	t.Parallel()
	h := startIngest(t, nil, defaultConfig("127.0.0.1:0=fixed/line,127.0.0.1:0=*/line"))
	sub := subscribe(t, h.srv, "relay.ch.>")

	const senders, perSender = 8, 500
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			handshake := i%2 == 1
			addr := h.addr(0)
			if handshake {
				addr = h.addr(1)
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			w := bufio.NewWriter(c)
			if handshake {
				// Pipelined: data follows the handshake without waiting for +OK.
				fmt.Fprintf(w, "hs%d\n", i)
			}
			for j := range perSender {
				fmt.Fprintf(w, "s%d m%d\n", i, j)
			}
			if err := w.Flush(); err != nil {
				t.Error(err)
			}
			if handshake {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if reply, _ := bufio.NewReader(c).ReadString('\n'); reply != "+OK\n" {
					t.Errorf("handshake reply %q", reply)
				}
			}
		})
	}
	wg.Wait()

	next := make([]int, senders)
	for n := 0; n < senders*perSender; n++ {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", n, senders*perSender, err)
		}
		var i, j int
		if _, err := fmt.Sscanf(string(msg.Data), "s%d m%d", &i, &j); err != nil {
			t.Fatalf("bad message %q", msg.Data)
		}
		want := "relay.ch.fixed"
		if i%2 == 1 {
			want = fmt.Sprintf("relay.ch.hs%d", i)
		}
		if msg.Subject != want {
			t.Fatalf("message %q on %s, want %s", msg.Data, msg.Subject, want)
		}
		if j != next[i] {
			t.Fatalf("sender %d: got m%d, want m%d (order broken)", i, j, next[i])
		}
		if msg.Header != nil {
			t.Fatalf("a text line carries header %v; text travels without one unless RELAY_INGEST_TEXT_HEADER", msg.Header)
		}
		next[i]++
	}
	if msg, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("unexpected extra message %q", msg.Data)
	}
	if got := ptestutil.ToFloat64(h.m.Messages); got != senders*perSender {
		t.Fatalf("relay_ingest_messages_total = %v", got)
	}
}

func TestBadHandshakes(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig("127.0.0.1:0=*/line")
	cfg.HandshakeTimeout = 300 * time.Millisecond
	h := startIngest(t, nil, cfg)
	tests := []struct {
		name   string
		send   string
		reason metrics.IngestRefusal
		errHas string
	}{
		{"bad channel", "bad channel!\n", reasonBadHandshake, "bad handshake"},
		{"wildcard channel", "a.>\n", reasonBadHandshake, "invalid channel name"},
		{"empty line", "\n", reasonBadHandshake, "empty line"},
		{"2 KiB line", strings.Repeat("a", 2048) + "\n", reasonBadHandshake, "longer than 1024"},
		{"2 KiB without newline", strings.Repeat("a", 2048), reasonBadHandshake, "longer than 1024"},
		{"no line before timeout", "", reasonHandshakeTimeout, "handshake timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, h.addr(0))
			if tt.send != "" {
				if _, err := io.WriteString(c, tt.send); err != nil {
					t.Fatal(err)
				}
			}
			br := bufio.NewReader(c)
			reply := readLine(t, c, br)
			if !strings.HasPrefix(reply, "-ERR ") || !strings.Contains(reply, tt.errHas) {
				t.Fatalf("reply %q, want -ERR containing %q", reply, tt.errHas)
			}
			expectClosed(t, c, br)
		})
	}
	if got := ptestutil.ToFloat64(h.m.Refused.With(reasonBadHandshake)); got != 5 {
		t.Errorf("refused{bad_handshake} = %v, want 5", got)
	}
	if got := ptestutil.ToFloat64(h.m.Refused.With(reasonHandshakeTimeout)); got != 1 {
		t.Errorf("refused{handshake_timeout} = %v, want 1", got)
	}
}

func TestLen32OverMaxIsRefused(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig("127.0.0.1:0=bin/len32")
	cfg.MaxMessage = 1024
	h := startIngest(t, nil, cfg)
	sub := subscribe(t, h.srv, "relay.ch.bin")

	c := dial(t, h.addr(0))
	frame := func(n int) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(n))
		return append(b, make([]byte, n)...)
	}
	c.Write(frame(1024))
	c.Write(frame(1025))
	br := bufio.NewReader(c)
	if reply := readLine(t, c, br); reply != "-ERR message too large (max 1024 bytes)\n" {
		t.Fatalf("reply %q", reply)
	}
	expectClosed(t, c, br)

	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil || len(msg.Data) != 1024 || msg.Header.Get("Relay-Format") != "binary" {
		t.Fatalf("the frame within the limit: %v, %d bytes", err, len(msg.Data))
	}
	if msg, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("oversized frame was published (%d bytes)", len(msg.Data))
	}
	if got := ptestutil.ToFloat64(h.m.Refused.With(reasonTooLarge)); got != 1 {
		t.Fatalf("refused{too_large} = %v", got)
	}
}

// TestLastLineWithoutNewlineAndBinaryLines also checks the Relay-Format
// header: binary lines always carry "binary", text lines carry "text" only
// with RELAY_INGEST_TEXT_HEADER (and no header otherwise).
func TestLastLineWithoutNewlineAndBinaryLines(t *testing.T) {
	t.Parallel()
	for _, textHeader := range []bool{false, true} {
		t.Run(fmt.Sprintf("text-header=%v", textHeader), func(t *testing.T) {
			t.Parallel()
			cfg := defaultConfig("127.0.0.1:0=d/line")
			cfg.TextHeader = textHeader
			h := startIngest(t, nil, cfg)
			sub := subscribe(t, h.srv, "relay.ch.d")
			c := dial(t, h.addr(0))
			io.WriteString(c, "one\r\n\n\xff\xfe\nlast")
			c.Close()
			text := ""
			if textHeader {
				text = "text"
			}
			want := []struct{ data, format string }{{"one", text}, {"", text}, {"\xff\xfe", "binary"}, {"last", text}}
			for _, w := range want {
				msg, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				_, hasHeader := msg.Header["Relay-Format"]
				if string(msg.Data) != w.data || msg.Header.Get("Relay-Format") != w.format || hasHeader != (w.format != "") {
					t.Fatalf("got %q/%v, want %q/%q", msg.Data, msg.Header, w.data, w.format)
				}
			}
		})
	}
}

func TestTooManyConnections(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig("127.0.0.1:0=d/line")
	cfg.MaxConnections = 1
	h := startIngest(t, nil, cfg)
	first := dial(t, h.addr(0))
	io.WriteString(first, "hello\n")
	testutil.Eventually(t, 10*time.Second, func() error {
		if ptestutil.ToFloat64(h.m.Connections) != 1 {
			return errors.New("first sender not yet served")
		}
		return nil
	})
	second := dial(t, h.addr(0))
	br := bufio.NewReader(second)
	if reply := readLine(t, second, br); reply != "-ERR too many connections\n" {
		t.Fatalf("reply %q", reply)
	}
	expectClosed(t, second, br)
}

// TestBackpressureBoundsMemory stops the NATS server while a sender keeps
// writing: ingest must stop reading (the sender's writes block) instead of
// buffering, and after NATS returns every line the sender wrote arrives, in
// order.
func TestBackpressureBoundsMemory(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	port := srv.Addr().(*net.TCPAddr).Port
	cfg := defaultConfig("127.0.0.1:0=bp/line")
	cfg.OutageHold = 5 * time.Minute // this test is about holding, not giving up
	h := startIngest(t, srv, cfg, nats.ReconnectWait(time.Hour))

	srv.Shutdown()
	srv.WaitForShutdown()
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.ing.Ready() == nil {
			return errors.New("ingest still ready with NATS down")
		}
		return nil
	})

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	c := dial(t, h.addr(0))
	line := []byte(strings.Repeat("x", 1000) + "\n")
	written, lines := 0, 0
	var partial int
	for {
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Write(line)
		written += n
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			partial = n
			break
		}
		lines++
		if written > 512<<20 {
			t.Fatalf("sender wrote %d MiB without being pushed back", written>>20)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("sender pushed back after %d bytes (%d lines); ingest heap grew %d KiB", written, lines, growth>>10)
	// Kernel socket buffers and one read buffer (no reconnect buffer: a
	// publish fails at once while NATS is down): tens of MiB at most,
	// whatever the sender does.
	if written > 64<<20 {
		t.Fatalf("sender wrote %d MiB before backpressure", written>>20)
	}
	if growth > 32<<20 {
		t.Fatalf("heap grew %d MiB while NATS was down", growth>>20)
	}

	// Held, not accepted: nothing counts as published while NATS is down.
	if got := ptestutil.ToFloat64(h.m.Messages); got != 0 {
		t.Fatalf("relay_ingest_messages_total = %v while NATS was down, want 0 (nothing accepted)", got)
	}
	if got := ptestutil.ToFloat64(h.m.Held); got != 1 {
		t.Fatalf("relay_ingest_senders_held = %v, want 1", got)
	}

	// NATS comes back on the same port: everything the sender wrote arrives.
	srv2, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: fmt.Sprintf("127.0.0.1:%d", port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	sub := subscribe(t, srv2, "relay.ch.bp")
	h.ing.nc.ForceReconnect()
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(line[partial:]); err != nil {
		t.Fatal(err)
	}
	lines++
	c.Close()
	for i := range lines {
		msg, err := sub.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d lines: %v", i, lines, err)
		}
		if len(msg.Data) != len(line)-1 {
			t.Fatalf("line %d has %d bytes", i, len(msg.Data))
		}
	}
	if got := ptestutil.ToFloat64(h.m.PublishRetries); got == 0 {
		t.Fatal("no publish was retried: backpressure path not exercised")
	}
	if got := ptestutil.ToFloat64(h.m.Messages); got != float64(lines) {
		t.Fatalf("relay_ingest_messages_total = %v after NATS returned, want %d", got, lines)
	}
}

// TestShutdownPublishesWhatWasWritten: on shutdown, lines a sender already
// wrote are still read and published before NATS is closed.
func TestShutdownPublishesWhatWasWritten(t *testing.T) {
	t.Parallel()
	h := startIngest(t, nil, defaultConfig("127.0.0.1:0=sd/line"))
	sub := subscribe(t, h.srv, "relay.ch.sd")
	c := dial(t, h.addr(0))
	const n = 2000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d lines: %v", i, n, err)
		}
		if want := fmt.Sprintf("line %d", i); string(msg.Data) != want {
			t.Fatalf("got %q, want %q", msg.Data, want)
		}
	}
	br := bufio.NewReader(c)
	if reply := readLine(t, c, br); reply != fmt.Sprintf("-ERR server shutting down: %d messages accepted\n", n) {
		t.Fatalf("reply at shutdown %q", reply)
	}
	if _, err := net.DialTimeout("tcp", h.addr(0), time.Second); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}

func TestNewFailsOnPortInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	srv := testutil.NATSServer(t)
	nc := testutil.Connect(t, srv)
	_, err = New(Options{Config: defaultConfig(busy.Addr().String() + "=d/line"), SubjectPrefix: "relay", NATS: nc, Logger: testutil.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New = %v, want address in use", err)
	}
}

// TestOutageHoldRefusesWithCount: while NATS is down ingest accepts
// nothing; a sender held longer than RELAY_INGEST_OUTAGE_HOLD is told how
// many of its messages were accepted, and the counters keep published and
// unpublished apart.
func TestOutageHoldRefusesWithCount(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	cfg := defaultConfig("127.0.0.1:0=hold/line")
	cfg.OutageHold = 500 * time.Millisecond
	h := startIngest(t, srv, cfg, nats.ReconnectWait(time.Hour))
	sub := subscribe(t, srv, "relay.ch.hold")

	c := dial(t, h.addr(0))
	const before = 100
	io.WriteString(c, numbered("m", 0, before))
	for i := range before {
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("after %d of %d: %v", i, before, err)
		}
	}
	// The confirmer's round trip proves NATS took them (within 100 ms).
	testutil.Eventually(t, 10*time.Second, func() error {
		h.ing.k.mu.Lock()
		defer h.ing.k.mu.Unlock()
		if out := h.ing.nc.Stats().OutMsgs; h.ing.k.confirmed < out {
			return fmt.Errorf("confirmed %d of %d", h.ing.k.confirmed, out)
		}
		return nil
	})
	srv.Shutdown()
	srv.WaitForShutdown()
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.ing.Ready() == nil {
			return errors.New("ingest still ready with NATS down")
		}
		return nil
	})
	io.WriteString(c, numbered("m", before, 50))
	br := bufio.NewReader(c)
	if reply, want := readLine(t, c, br), fmt.Sprintf("-ERR upstream unavailable: %d messages accepted\n", before); reply != want {
		t.Fatalf("reply %q, want %q", reply, want)
	}
	expectClosed(t, c, br)
	if got := ptestutil.ToFloat64(h.m.Messages); got != before {
		t.Errorf("relay_ingest_messages_total = %v, want %d (only what NATS took)", got, before)
	}
	if got := ptestutil.ToFloat64(h.m.Unpublished.With(metrics.UnpublishedUpstream)); got != 1 {
		t.Errorf("relay_ingest_unpublished_total{upstream_unavailable} = %v, want 1 (the held message)", got)
	}
	if got := ptestutil.ToFloat64(h.m.Refused.With(reasonUpstream)); got != 1 {
		t.Errorf("relay_ingest_refused_total{upstream_unavailable} = %v, want 1", got)
	}
	if got := ptestutil.ToFloat64(h.m.Held); got != 0 {
		t.Errorf("relay_ingest_senders_held = %v after the sender was closed", got)
	}
}

// numbered returns n numbered lines "prefix i\n" from first on.
func numbered(prefix string, first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "%s %d\n", prefix, i)
	}
	return b.String()
}

// TestConfirmedExcludesInFlightAtDisconnect: messages published on a NATS
// connection that then drops are never counted as accepted, even after a
// later confirmation on the new connection; what NATS confirmed before the
// drop still counts.
func TestConfirmedExcludesInFlightAtDisconnect(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	port := srv.Addr().(*net.TCPAddr).Port
	nc := testutil.Connect(t, srv, nats.ReconnectBufSize(-1), nats.ReconnectWait(50*time.Millisecond))
	k := newConfirmer(nc) // driven by hand: no run loop
	l := newLedger(k)
	msgs := 0
	publish := func(n int) {
		for range n {
			l.beforePublish(msgs)
			if err := nc.Publish("relay.ch.x", []byte("m")); err != nil {
				t.Fatal(err)
			}
			msgs++
		}
	}
	publish(100)
	k.round()
	if got := l.confirmed(msgs); got != 100 {
		t.Fatalf("confirmed %d after a round trip, want 100", got)
	}
	publish(50) // in flight when NATS goes
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: fmt.Sprintf("127.0.0.1:%d", port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	testutil.Eventually(t, 20*time.Second, func() error {
		if !nc.IsConnected() || nc.Stats().Reconnects == 0 {
			return errors.New("not reconnected")
		}
		return nil
	})
	publish(10)
	k.round()
	if got := l.confirmed(msgs); got != 100 {
		t.Fatalf("confirmed %d of %d, want 100: the 50 in flight at the drop may be lost", got, msgs)
	}
	if k.stalled() {
		t.Fatal("stalled after a confirmed round")
	}
}
