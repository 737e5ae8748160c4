package fanout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/wsframe"
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
		return newClient("q", clientLimits{queueMsgs: 3, queueBytes: 200, maxBytes: 500,
			slowGrace: time.Hour, closeGrace: time.Second}, m, testLogger(t))
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
	c.close(websocket.StatusGoingAway, "", disconnectShutdown)

	// Over the budget (200) is allowed up to the cap (500), each message
	// charged its payload + msgOverhead.
	c = newC()
	if !c.enqueue(msg(100)) || !c.enqueue(msg(10)) {
		t.Error("over the budget but under the cap must be taken")
	}
	if !c.enqueue(msg(500 - (100 + msgOverhead) - (10 + msgOverhead) - msgOverhead)) {
		t.Error("a message that fills the cap exactly must be taken")
	}
	if c.enqueue(msg(0)) {
		t.Error("hard cap not applied")
	}
	c.close(websocket.StatusGoingAway, "", disconnectShutdown)

	c = newC()
	if !c.enqueue(msg(1000)) {
		t.Error("an empty queue must take a message larger than the cap")
	}
	c.close(websocket.StatusGoingAway, "", disconnectShutdown)

	c = newC()
	c.close(websocket.StatusGoingAway, "", disconnectShutdown)
	if !c.enqueue(msg(1)) || c.feed.queued() != 0 {
		t.Error("a closed client must drop messages without reporting a slow consumer")
	}
}

// Issue 11 finding 4: an unpaced burst of 5,000 lines of 100 bytes (500 KB,
// what `cat log | nc` writes) reaches readers that drain it as fast as they
// can, with the default limits, and none of them is cut. Before the queue
// was judged by draining, all four were closed with 1008 (1,024 messages).
func TestBurstDoesNotCutDrainingReaders(t *testing.T) {
	t.Parallel()
	defaults, _ := config.Load()
	e := startEnv(t, func(o *Options) {
		addr := o.Config.Addr
		o.Config = defaults.Fanout
		o.Config.Addr = addr
	})
	const readers, n, size = 4, 5000, 100
	conns := make([]*websocket.Conn, readers)
	for i := range conns {
		conns[i] = e.dial("burst", nil)
	}
	got := make(chan error, readers)
	for _, c := range conns {
		go func() {
			for i := range n {
				_, b, err := readTimeout(c, 60*time.Second)
				if err != nil {
					got <- fmt.Errorf("after %d of %d messages: %w", i, n, err)
					return
				}
				if want := fmt.Sprintf("%08d", i); len(b) != size || string(b[:8]) != want {
					got <- fmt.Errorf("message %d: %q", i, b[:min(len(b), 8)])
					return
				}
			}
			got <- nil
		}()
	}
	payload := bytes.Repeat([]byte("x"), size)
	for i := range n {
		copy(payload, fmt.Sprintf("%08d", i))
		e.publish("burst", payload)
	}
	e.flush()
	for range readers {
		if err := <-got; err != nil {
			t.Error(err)
		}
	}
	if v := val(e.m.SlowConsumers.With(metrics.SlowClient)); v != 0 {
		t.Errorf("SlowConsumers{client} = %v, want 0", v)
	}
}

// A reader that takes nothing at all is still cut with 1008 once it is over
// its byte budget and its socket has taken no bytes for the grace period,
// even when no further message arrives to notice it, while a reader on the
// same channel gets everything.
func TestStuckReaderIsCutAfterGrace(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second // long enough that a starved good reader still drains in it
	e := startEnv(t, func(o *Options) {
		o.Config.ClientQueueBytes = 1 << 20
		o.Config.ClientQueueMaxBytes = 256 << 20 // only the stall may cut it
		o.Config.WriteTimeout = 4 * grace        // the stall, not the write deadline
		o.Config.SlowGrace = grace
	})
	good := e.dial("stuck", nil)
	stuck := rawUpgrade(t, e.srv.Addr().String(), "stuck")
	defer stuck.Close()

	// Enough to fill loopback's socket buffers (a few MB) and the budget.
	const n, size = 400, 64 << 10
	payload := bytes.Repeat([]byte("y"), size)
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, _, err := readTimeout(good, 60*time.Second); err != nil {
				done <- fmt.Errorf("good reader: after %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	for range n {
		e.publish("stuck", payload)
	}
	e.flush()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if v := val(e.m.Disconnects.With(disconnectSlowConsumer)); v != 1 {
			return fmt.Errorf("Disconnects{slow_consumer} = %v", v)
		}
		return nil
	})
	if v := val(e.m.SlowConsumers.With(metrics.SlowClient)); v != 1 {
		t.Errorf("SlowConsumers{client} = %v, want 1", v)
	}
	// Its TCP connection is cut by the server: reading what the kernel
	// holds ends, and the last frame, if the close frame got through, is
	// 1008 slow consumer.
	stuck.SetReadDeadline(time.Now().Add(30 * time.Second))
	all, err := io.ReadAll(stuck)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("stuck reader: %v (connection not cut)", err)
	}
	if code, reason, ok := lastCloseFrame(all); ok && (code != 1008 || reason != reasonSlowConsumer) {
		t.Errorf("stuck reader: close %d %q, want 1008 %q", code, reason, reasonSlowConsumer)
	}
	if v := val(e.m.Connections); v != 1 {
		t.Errorf("Connections = %v, want 1 (the good reader)", v)
	}
}

// lastCloseFrame walks the server frames in b and returns the close frame's
// code and reason, if b holds one.
func lastCloseFrame(b []byte) (code int, reason string, ok bool) {
	for {
		h, n, hok := wsframe.ParseHeader(b)
		if !hok || uint64(len(b)-n) < h.Len {
			return 0, "", false
		}
		p := b[n : n+int(h.Len)]
		if h.Op == wsframe.OpClose && len(p) >= 2 {
			return wsframe.CloseCode(p), string(p[2:]), true
		}
		b = b[n+int(h.Len):]
	}
}
