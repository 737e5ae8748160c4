package fanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/health"
	"github.com/relaydev/relay/shared/metrics"
)

func TestShutdownClosesClientsWithGoingAway(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.ShutdownGrace = 10 * time.Second })
	conns := []*websocket.Conn{e.dial("a", nil), e.dial("a", nil), e.dial("b", nil)}
	if err := e.srv.Ready(); err != nil {
		t.Fatalf("Ready before shutdown: %v", err)
	}
	results := make(chan error, len(conns))
	for _, c := range conns {
		go func() { _, err := readErr(c, 30*time.Second); results <- err }()
	}

	took, err := e.stop()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took >= e.grace {
		t.Errorf("shutdown took %s, grace is %s", took, e.grace)
	}
	for range conns {
		err := <-results
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != reasonShutdown {
			t.Errorf("receiver got %v, want close 1001 %q", err, reasonShutdown)
		}
	}
	if got := val(e.m.Disconnects.With(disconnectShutdown)); got != 3 {
		t.Errorf("Disconnects{shutdown} = %v, want 3", got)
	}
	if got := val(e.m.Connections); got != 0 {
		t.Errorf("Connections = %v", got)
	}
	if !errors.Is(e.srv.Ready(), health.ErrDraining) {
		t.Errorf("Ready after shutdown: %v, want draining", e.srv.Ready())
	}
	if !e.nc.IsClosed() {
		t.Error("NATS connection not drained and closed")
	}

	// The handler still answers: not ready, and no new upgrades.
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", rec.Code)
	}
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/ws/a", nil)
	req.Host = "localhost" // a loopback-only listener answers only local names
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	e.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("upgrade while draining: %d, want 503", rec.Code)
	}
	if got := val(e.m.Refused.With(refusedDraining)); got != 1 {
		t.Errorf("Refused{draining} = %v", got)
	}
	if err := e.srv.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run: %v", err)
	}
}

// /readyz turns 503 as soon as shutdown begins, while clients are still
// being closed.
func TestReadyzFailsDuringDrain(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.ShutdownGrace = 10 * time.Second })
	stuck := rawUpgrade(t, e.srv.Addr().String(), "hold") // never answers the close: shutdown takes closeGrace
	defer stuck.Close()
	readyz := func() int {
		rec := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code
	}
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown: %d", code)
	}
	e.cancel()
	eventually(t, 10*time.Second, func() error {
		if code := readyz(); code != http.StatusServiceUnavailable {
			return errors.New("/readyz still 200")
		}
		return nil
	})
	if _, err := e.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A client that neither reads nor answers the close handshake cannot hold
// the shutdown past the grace period.
func TestShutdownWithUncooperativeClient(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.ShutdownGrace = 4 * time.Second })
	conn := rawUpgrade(t, e.srv.Addr().String(), "stuck")
	defer conn.Close()
	e.publish("stuck", []byte("unread"))
	e.flush()

	took, err := e.stop()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took >= e.grace {
		t.Errorf("shutdown took %s, grace is %s", took, e.grace)
	}
	// The server has cut the TCP connection: reading ends with EOF.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("raw client: %v, want EOF", err)
	}
}

// With a grace period shorter than the close handshake allowance, the
// server cuts the connections itself to keep its deadline.
func TestShutdownGraceShorterThanCloseGrace(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.ShutdownGrace = 400 * time.Millisecond })
	conn := rawUpgrade(t, e.srv.Addr().String(), "stuck")
	defer conn.Close()
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Connections); got != 1 {
			return fmt.Errorf("Connections = %v", got)
		}
		return nil
	})
	took, err := e.stop()
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Generous slack for a loaded machine; without the cut it would be 1s+.
	if took > e.grace+2*time.Second {
		t.Errorf("shutdown took %s, grace is %s", took, e.grace)
	}
	if got := val(e.m.Connections); got != 0 {
		t.Errorf("Connections = %v after Run returned", got)
	}
}

// rawUpgrade performs the WebSocket handshake by hand and then does nothing
// at all: no reads (beyond the response header), no pongs, no close reply.
func rawUpgrade(t *testing.T, addr, channel string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "GET /ws/"+channel+" HTTP/1.1\r\nHost: "+addr+
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	// Read the header byte by byte so no frame is consumed with it.
	var hdr strings.Builder
	b := make([]byte, 1)
	for !strings.HasSuffix(hdr.String(), "\r\n\r\n") {
		if _, err := conn.Read(b); err != nil {
			t.Fatalf("handshake: %v (got %q)", err, hdr.String())
		}
		hdr.WriteByte(b[0])
	}
	if !strings.HasPrefix(hdr.String(), "HTTP/1.1 101") {
		t.Fatalf("handshake: %q", hdr.String())
	}
	conn.SetDeadline(time.Time{})
	return conn
}

// TestNewValidatesOptions: every problem at once, the way ingest.New reports them.
func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.ClientQueue = 0
	_, err := New(Options{
		Config:        cfg,
		SubjectPrefix: "bad prefix",
	})
	if !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("got %v, want ErrInvalidOptions", err)
	}
	for _, want := range []string{"NATS", "prefix", "RELAY_FANOUT_CLIENT_QUEUE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestNewFailsWhenPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ns := startNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := testConfig()
	cfg.Addr = ln.Addr().String()
	_, err = New(Options{Config: cfg, SubjectPrefix: "relay", ShutdownGrace: time.Second, NATS: nc,
		Logger: testLogger(t), Metrics: metrics.New().Fanout})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("got %v, want a listen error", err)
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	reg := metrics.New()
	e := startEnv(t, func(o *Options) {
		o.Metrics = reg.Fanout
		o.MetricsHandler = reg.Handler()
		o.Config.PublicIngestAddr = "relay.example:7071"
	})
	base := "http://" + e.srv.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/")
	if code != http.StatusOK || !strings.Contains(body, "/ws/") ||
		!strings.Contains(body, `"publicIngestAddr":"relay.example:7071"`) {
		t.Errorf("demo page: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	_ = e.dial("page", nil)
	// The gauge moves just after the 101 has gone out.
	eventually(t, 10*time.Second, func() error {
		code, body := get("/metrics")
		if code != http.StatusOK || !strings.Contains(body, "relay_fanout_connections 1") {
			return fmt.Errorf("/metrics: %d, no relay_fanout_connections 1 in\n%s", code, body)
		}
		return nil
	})
	if code, _ := get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope: %d", code)
	}
}

// Readiness follows the NATS connection.
func TestReadyNeedsNATS(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	if err := e.srv.Ready(); err != nil {
		t.Fatal(err)
	}
	e.nc.Close()
	if err := e.srv.Ready(); !errors.Is(err, ErrNATSDisconnected) {
		t.Errorf("Ready with NATS closed: %v", err)
	}
}

// When the fanout's NATS connection drops, its receivers are closed with
// 1012 rather than left connected across a gap they cannot see.
func TestNATSLossClosesClients(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	conns := []*websocket.Conn{e.dial("a", nil), e.dial("b", nil)}
	results := make(chan error, len(conns))
	for _, c := range conns {
		go func() { _, err := readErr(c, 30*time.Second); results <- err }()
	}
	e.ns.Shutdown()
	for range conns {
		err := <-results
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusServiceRestart || ce.Reason != reasonNATSLost {
			t.Errorf("receiver got %v, want close 1012 %q", err, reasonNATSLost)
		}
	}
	if got := val(e.m.Disconnects.With(disconnectNATSLost)); got != 2 {
		t.Errorf("Disconnects{nats_disconnected} = %v, want 2", got)
	}
	if err := e.srv.Ready(); !errors.Is(err, ErrNATSDisconnected) {
		t.Errorf("Ready with NATS down: %v", err)
	}
}

func TestNATSLossKeepsClientsWhenConfigured(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.Config.CloseOnNATSLoss = false })
	c := e.dial("a", nil)
	disconnected := make(chan struct{})
	prev := e.nc.Opts.DisconnectedErrCB
	e.nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) { prev(nc, err); close(disconnected) })
	e.ns.Shutdown()
	<-disconnected
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go c.Reader(ctx) // pongs arrive through a reader
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("client closed although CloseOnNATSLoss is false: %v", err)
	}
	if got := val(e.m.Disconnects.With(disconnectNATSLost)); got != 0 {
		t.Errorf("Disconnects{nats_disconnected} = %v, want 0", got)
	}
}

// Messages already queued for a receiver when shutdown begins are sent
// before the 1001 close frame, not dropped. The receiver reads nothing until
// shutdown starts, so its TCP window is full and most messages wait in the
// queue.
func TestShutdownDeliversQueuedBeforeGoingAway(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) { o.Config.ClientQueueBytes = 256 << 20 })
	c := e.dial("q", nil)
	const n, size = 300, 32 << 10
	for range n {
		e.publish("q", make([]byte, size))
	}
	e.flush()
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.MessagesIn); got != n {
			return fmt.Errorf("fanout has received %v of %d messages from NATS", got, n)
		}
		return nil
	})
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() { n, err := readErr(c, 30*time.Second); res <- result{n, err} }()
	if _, err := e.stop(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	var ce websocket.CloseError
	if !errors.As(r.err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("receiver got %v after %d messages, want 1001", r.err, r.n)
	}
	if r.n != n {
		t.Fatalf("receiver got %d of %d messages before 1001", r.n, n)
	}
}

// While NATS is down an upgrade is refused at once in a way a browser can
// see: the upgrade completes and closes with 1012 and a reason (not an HTTP
// status after waiting for a subscription that cannot be confirmed).
func TestUpgradeWhileNATSDownClosesWith1012(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	e.ns.Shutdown()
	eventually(t, 10*time.Second, func() error {
		if e.srv.Ready() == nil {
			return errors.New("still ready with NATS down")
		}
		return nil
	})
	c, err := e.tryDial("down", nil)
	if err != nil {
		t.Fatalf("upgrade while NATS is down: %v (want 101, then close 1012)", err)
	}
	_, err = readErr(c, 10*time.Second)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusServiceRestart || ce.Reason != reasonNATSDown {
		t.Fatalf("receiver got %v, want close 1012 %q", err, reasonNATSDown)
	}
	if got := val(e.m.Refused.With(refusedNATSDown)); got != 1 {
		t.Errorf("Refused{nats_disconnected} = %v, want 1", got)
	}
	if got := val(e.m.Subscriptions); got != 0 {
		t.Errorf("Subscriptions = %v after a refused upgrade", got)
	}
}

// With Options.Upstream (ingest in 'relay all'), shutdown keeps the
// receivers until the publishers are done, so messages published during
// their drain still reach them before 1001.
func TestShutdownWaitsForUpstream(t *testing.T) {
	t.Parallel()
	upstream := make(chan struct{})
	e := startEnv(t, func(o *Options) {
		o.Upstream = upstream
		o.Config.ClientQueue = 1 << 16 // this test is not about bursts
	})
	c := e.dial("up", nil)
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() { n, err := readErr(c, 30*time.Second); res <- result{n, err} }()
	stopped := make(chan error, 1)
	go func() { _, err := e.stop(); stopped <- err }()
	eventually(t, 10*time.Second, func() error {
		if e.srv.Ready() == nil {
			return errors.New("shutdown has not begun")
		}
		return nil
	})
	// The publisher drains after the signal: 2,000 messages, then done.
	const n = 2000
	for i := range n {
		e.publish("up", fmt.Appendf(nil, "m %d", i))
	}
	e.flush()
	close(upstream)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	r := <-res
	var ce websocket.CloseError
	if !errors.As(r.err, &ce) || ce.Code != websocket.StatusGoingAway {
		t.Fatalf("receiver got %v after %d messages, want 1001", r.err, r.n)
	}
	if r.n != n {
		t.Fatalf("receiver got %d of the %d messages published during the drain before 1001", r.n, n)
	}
}
