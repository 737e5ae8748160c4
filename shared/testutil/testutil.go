// Package testutil holds helpers for relay's tests: a real embedded NATS
// server on 127.0.0.1, a logger that writes to the test, and eventually.
// Nothing here replaces a real part with a fake.
package testutil

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/natsconn"
)

// Eventually polls fn until it returns nil or timeout passes, then fails
// with fn's last error. Use it instead of sleeps.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Logger returns a logger that writes to t until the test ends, and drops
// records after that (a goroutine still stopping must not panic the test).
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// NATSServer starts a real NATS server on 127.0.0.1 with a random port and
// shuts it down when the test ends.
func NATSServer(t testing.TB) *server.Server {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// JetStreamServer starts a real NATS server with JetStream, its store in a
// temporary directory, on 127.0.0.1 with a random port; it shuts down when
// the test ends.
func JetStreamServer(t testing.TB) *server.Server {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0", JetStreamDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Connect opens a NATS client connection to srv, closed when the test ends.
func Connect(t testing.TB, srv *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), natsconn.Options{
		URLs: []string{srv.ClientURL()}, Name: t.Name(), RetryWindow: 5 * time.Second,
		Logger: Logger(t), Extra: opts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
