package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relaydev/relay/shared/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestConnectFailsAfterRetryWindow(t *testing.T) {
	t.Parallel()
	url := fmt.Sprintf("nats://user:secret@127.0.0.1:%d", freePort(t))
	_, err := Connect(context.Background(), Options{URLs: []string{url}, RetryWindow: 500 * time.Millisecond})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Connect = %v, want ErrUnreachable", err)
	}
	if got := err.Error(); strings.Contains(got, "secret") {
		t.Fatalf("error leaks the password: %s", got)
	}
}

// A server that starts after the tier (a pod starting before NATS) is found
// within the retry window.
func TestConnectRetriesUntilServerStarts(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	started := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		srv, err := StartEmbedded(EmbeddedOptions{Listen: fmt.Sprintf("127.0.0.1:%d", port)})
		if err == nil {
			t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		}
		started <- err
	}()
	nc, err := Connect(context.Background(), Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}, RetryWindow: 20 * time.Second})
	if serr := <-started; serr != nil {
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatalf("Connect = %v", err)
	}
	nc.Close()
}

func TestConnectStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, Options{URLs: []string{fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))}, RetryWindow: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want context deadline", err)
	}
}

func TestEmbeddedInProcess(t *testing.T) {
	t.Parallel()
	srv, err := StartEmbedded(EmbeddedOptions{MaxPayload: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if srv.Addr() != nil {
		t.Fatalf("in-process server listens on %v", srv.Addr())
	}
	events := make(chan metrics.NATSEvent, 4)
	nc, err := Connect(context.Background(), Options{InProcess: srv, OnEvent: func(e metrics.NATSEvent) { events <- e }})
	if err != nil {
		t.Fatal(err)
	}
	if nc.MaxPayload() != 2<<20 {
		t.Fatalf("MaxPayload = %d", nc.MaxPayload())
	}
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	nc.Publish("x", []byte("hi"))
	if msg, err := sub.NextMsg(5 * time.Second); err != nil || string(msg.Data) != "hi" {
		t.Fatalf("NextMsg = %v, %v", msg, err)
	}
	nc.Close()
	if e := <-events; e != metrics.NATSClosed {
		t.Fatalf("event %q, want closed", e)
	}
}

func TestEmbeddedPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if srv, err := StartEmbedded(EmbeddedOptions{Listen: l.Addr().String()}); err == nil {
		srv.Shutdown()
		t.Fatal("StartEmbedded on a busy port succeeded")
	}
}

// TestConnectLogsWhereNATSIs: an in-process connection is logged as
// "in-process", not as nats.go's default URL where nothing listens; when the
// embedded server also listens, as the address it listens on.
func TestConnectLogsWhereNATSIs(t *testing.T) {
	t.Parallel()
	for _, listen := range []string{"", "127.0.0.1:0"} {
		t.Run("listen="+listen, func(t *testing.T) {
			t.Parallel()
			srv, err := StartEmbedded(EmbeddedOptions{Listen: listen})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			var buf bytes.Buffer
			nc, err := Connect(context.Background(), Options{InProcess: srv, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
			if err != nil {
				t.Fatal(err)
			}
			nc.Close()
			want := "url=in-process"
			if listen != "" {
				want = "url=nats://" + srv.Addr().String()
			}
			if !strings.Contains(buf.String(), want+" ") || strings.Contains(buf.String(), "4222") {
				t.Errorf("log %q, want %s", buf.String(), want)
			}
		})
	}
}
