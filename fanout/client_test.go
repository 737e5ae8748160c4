package fanout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/metrics"
)

// A receiver that stops reading fills its TCP buffers and then its queue;
// it must be closed (and its TCP connection torn down without its help)
// while a receiver on the same channel gets every message.
func TestSlowClientIsClosedOthersGetEverything(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.ClientQueue = 16
		o.Config.ClientQueueBytes = 1 << 20
	})
	good := e.dial("burst", nil)
	slow := e.dial("burst", nil) // never read until the end

	payload := bytes.Repeat([]byte("x"), 64<<10)
	const step = 8 // well within the queue: good never falls behind by more
	sent := 0
	publishStep := func() {
		for range step {
			copy(payload, fmt.Sprintf("%08d", sent))
			e.publish("burst", payload)
			sent++
		}
		e.flush()
		for i := sent - step; i < sent; i++ {
			_, b := read(t, good, 30*time.Second)
			if want := fmt.Sprintf("%08d", i); string(b[:8]) != want || len(b) != len(payload) {
				t.Fatalf("good receiver: got message %q (%d bytes), want %s", b[:8], len(b), want)
			}
		}
	}
	// Loopback TCP buffers hold a few MB; the slow client is detected well
	// before this bound (3000 messages of 64 KiB).
	for sent < 3000 && val(e.m.SlowConsumers.With(metrics.SlowClient)) == 0 {
		publishStep()
	}
	if val(e.m.SlowConsumers.With(metrics.SlowClient)) != 1 {
		t.Fatalf("slow client not detected after %d messages", sent)
	}
	// The server cuts the slow client's connection by itself.
	eventually(t, 15*time.Second, func() error {
		if got := val(e.m.Connections); got != 1 {
			return fmt.Errorf("Connections = %v, want 1", got)
		}
		return nil
	})
	for range 4 {
		publishStep() // the good receiver carries on
	}
	if got := val(e.m.Disconnects.With(disconnectSlowConsumer)); got != 1 {
		t.Errorf("Disconnects{slow_consumer} = %v, want 1", got)
	}

	n, err := readErr(slow, 30*time.Second)
	if n >= sent {
		t.Errorf("slow client read %d of %d messages", n, sent)
	}
	if code := websocket.CloseStatus(err); code != -1 {
		var ce websocket.CloseError
		errors.As(err, &ce)
		if ce.Code != websocket.StatusPolicyViolation || ce.Reason != reasonSlowConsumer {
			t.Errorf("slow client: close %v %q, want 1008 %q", ce.Code, ce.Reason, reasonSlowConsumer)
		}
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow client's connection still open: %v", err)
	}
	t.Logf("slow client closed after %d of %d messages: %v", n, sent, err)
}

func TestClientDataIsRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	c := e.dial("talk", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello?")); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusUnsupportedData || ce.Reason != reasonClientData {
		t.Fatalf("got %v, want close 1003 %q", err, reasonClientData)
	}
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Disconnects.With(disconnectClientData)); got != 1 {
			return fmt.Errorf("Disconnects{client_data} = %v", got)
		}
		if got := val(e.m.Connections); got != 0 {
			return fmt.Errorf("Connections = %v", got)
		}
		return nil
	})
}

// A big client frame is refused from its header: the server never buffers
// the payload.
func TestLargeClientFrameIsRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	c := e.dial("talk", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go c.Write(ctx, websocket.MessageBinary, make([]byte, 8<<20)) // may fail once closed
	// The close frame may be lost when the server cuts the connection while
	// the client is still writing; a closed connection is what matters.
	if _, _, err := c.Read(ctx); errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connection still open: %v", err)
	}
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Disconnects.With(disconnectClientData)); got != 1 {
			return fmt.Errorf("Disconnects{client_data} = %v", got)
		}
		return nil
	})
}

func TestPingTimeoutClosesSilentClient(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.PingInterval = 50 * time.Millisecond
		o.Config.WriteTimeout = 300 * time.Millisecond
	})
	_ = e.dial("quiet", nil) // never reads, so never answers a ping
	eventually(t, 15*time.Second, func() error {
		if got := val(e.m.Disconnects.With(disconnectPingTimeout)); got != 1 {
			return fmt.Errorf("Disconnects{ping_timeout} = %v", got)
		}
		if got := val(e.m.Connections); got != 0 {
			return fmt.Errorf("Connections = %v", got)
		}
		return nil
	})
}

func TestPingKeepsReadingClient(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.PingInterval = 20 * time.Millisecond
		o.Config.WriteTimeout = 5 * time.Second
	})
	var pings atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL+"/ws/alive", &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readDone := make(chan error, 1)
	go func() { _, _, err := c.Read(context.Background()); readDone <- err }()
	eventually(t, 15*time.Second, func() error {
		if n := pings.Load(); n < 5 {
			return fmt.Errorf("%d pings", n)
		}
		return nil
	})
	e.publish("alive", []byte("ok"))
	e.flush()
	if err := <-readDone; err != nil {
		t.Fatalf("read after pings: %v", err)
	}
	if got := val(e.m.Disconnects.With(disconnectPingTimeout)); got != 0 {
		t.Errorf("Disconnects{ping_timeout} = %v", got)
	}
}

func TestEnqueueBoundsMessagesAndBytes(t *testing.T) {
	t.Parallel()
	m := metrics.New().Fanout
	newC := func() *client {
		return newClient("q", clientLimits{queueMsgs: 3, queueBytes: 100, closeGrace: time.Second}, m, testLogger(t))
	}
	msg := func(n int) *message { return &message{typ: websocket.MessageBinary, data: make([]byte, n)} }

	c := newC()
	for i := range 3 {
		if !c.enqueue(msg(1)) {
			t.Fatalf("message %d refused", i)
		}
	}
	if c.enqueue(msg(1)) {
		t.Error("4th message taken by a queue of 3")
	}

	c = newC()
	if !c.enqueue(msg(60)) || c.enqueue(msg(50)) {
		t.Error("byte bound not applied")
	}

	c = newC()
	if !c.enqueue(msg(1000)) {
		t.Error("an empty queue must take a message larger than the byte bound")
	}

	c = newC()
	c.close(websocket.StatusGoingAway, "", disconnectShutdown)
	if !c.enqueue(msg(1)) || len(c.queue) != 0 {
		t.Error("a closed client must drop messages without reporting a slow consumer")
	}
}
