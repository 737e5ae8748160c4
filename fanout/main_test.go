package fanout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	rtest "github.com/relaydev/relay/shared/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Shared helpers (real embedded NATS, a logger that writes to t, polling).
var (
	testLogger = rtest.Logger
	eventually = rtest.Eventually
	startNATS  = rtest.NATSServer
)

// env is a running fanout Server against its own embedded NATS server.
type env struct {
	t      testing.TB
	ns     *server.Server
	pub    *nats.Conn // a plain publisher, as any NATS client would be
	nc     *nats.Conn // the Server's connection
	srv    *Server
	m      *metrics.Fanout
	cancel context.CancelFunc
	done   chan error // Run's result
	wsURL  string     // ws://addr
	grace  time.Duration
}

func testConfig() config.Fanout {
	return config.Fanout{
		Addr:                "127.0.0.1:0",
		ClientQueue:         1024,
		ClientQueueBytes:    8 << 20,
		ClientQueueMaxBytes: 32 << 20,
		SlowGrace:           2 * time.Second,
		WriteTimeout:        5 * time.Second,
		MaxConnections:      1000,
		SubPendingMsgs:      65536,
		SubPendingBytes:     64 << 20,
		CloseOnNATSLoss:     true,
	}
}

// startEnv starts a Server with testConfig changed by edit (may be nil).
func startEnv(t testing.TB, edit func(*Options)) *env {
	t.Helper()
	return startEnvOn(t, startNATS(t), edit)
}

// startEnvOn is startEnv against the NATS server ns.
func startEnvOn(t testing.TB, ns *server.Server, edit func(*Options)) *env {
	t.Helper()
	log := testLogger(t)
	pub, err := nats.Connect(ns.ClientURL(), nats.Name("test-publisher"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("fanout"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // normally drained by Run already
	o := Options{
		Config:        testConfig(),
		SubjectPrefix: "relay",
		ShutdownGrace: 10 * time.Second,
		NATS:          nc,
		Logger:        log,
		Metrics:       metrics.New().Fanout,
	}
	if edit != nil {
		edit(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{
		t: t, ns: ns, pub: pub, nc: nc, srv: srv, m: o.Metrics, cancel: cancel,
		done: make(chan error, 1), wsURL: "ws://" + srv.Addr().String(), grace: o.ShutdownGrace,
	}
	go func() { e.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			e.done <- err
		case <-time.After(e.grace + 10*time.Second):
			t.Error("Run did not return")
		}
	})
	return e
}

// stop cancels Run and returns its result and how long shutdown took.
func (e *env) stop() (time.Duration, error) {
	e.t.Helper()
	start := time.Now()
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err
		return time.Since(start), err
	case <-time.After(e.grace + 10*time.Second):
		e.t.Fatal("Run did not return")
		return 0, nil
	}
}

// dial opens a receiver on channel; it is closed when the test ends.
func (e *env) dial(channel string, header http.Header) *websocket.Conn {
	e.t.Helper()
	c, err := e.tryDial(channel, header)
	if err != nil {
		e.t.Fatalf("dial %s: %v", channel, err)
	}
	return c
}

func (e *env) tryDial(channel string, header http.Header) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.wsURL+"/ws/"+channel, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil {
			return nil, &dialError{status: resp.StatusCode, err: err}
		}
		return nil, err
	}
	c.SetReadLimit(4 << 20)
	e.t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

type dialError struct {
	status int
	err    error
}

func (d *dialError) Error() string { return fmt.Sprintf("HTTP %d: %v", d.status, d.err) }

func dialStatus(err error) int {
	var d *dialError
	if errors.As(err, &d) {
		return d.status
	}
	return 0
}

func (e *env) publish(channel string, data []byte) {
	e.t.Helper()
	if err := e.pub.Publish("relay.ch."+channel, data); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) flush() {
	e.t.Helper()
	if err := e.pub.FlushTimeout(10 * time.Second); err != nil {
		e.t.Fatal(err)
	}
}

// read reads one message within timeout.
func read(t testing.TB, c *websocket.Conn, timeout time.Duration) (websocket.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, b
}

// readErr reads (and discards) until the connection fails and returns the
// error and the number of messages read.
func readErr(c *websocket.Conn, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for n := 0; ; n++ {
		if _, _, err := c.Read(ctx); err != nil {
			return n, err
		}
	}
}

// val reads a counter or gauge.
func val(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
