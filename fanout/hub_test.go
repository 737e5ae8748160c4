package fanout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

func TestDeliversEachChannelCompleteAndInOrder(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	const n = 500
	receivers := map[string][]*websocket.Conn{
		"a":     {e.dial("a", nil), e.dial("a", nil), e.dial("a", nil)},
		"b.sub": {e.dial("b.sub", nil)},
	}
	// Interleaved, so a receiver of the wrong channel would see foreign messages.
	for i := range n {
		for ch := range receivers {
			e.publish(ch, fmt.Appendf(nil, "%s-%d", ch, i))
		}
	}
	e.flush()

	var wg sync.WaitGroup
	for ch, conns := range receivers {
		for j, c := range conns {
			wg.Go(func() {
				for i := range n {
					typ, b, err := readTimeout(c, 30*time.Second)
					if err != nil {
						t.Errorf("%s receiver %d: message %d: %v", ch, j, i, err)
						return
					}
					if want := fmt.Sprintf("%s-%d", ch, i); string(b) != want || typ != websocket.MessageText {
						t.Errorf("%s receiver %d: got %v %q, want text %q", ch, j, typ, b, want)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if got := val(e.m.MessagesIn); got != 2*n {
		t.Errorf("MessagesIn = %v, want %d", got, 2*n)
	}
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Deliveries); got != 4*n {
			return fmt.Errorf("Deliveries = %v, want %d", got, 4*n)
		}
		return nil
	})
}

func readTimeout(c *websocket.Conn, timeout time.Duration) (websocket.MessageType, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Read(ctx)
}

func TestSubscriptionFollowsLocalInterest(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	base := e.ns.NumSubscriptions()
	check := func(subs int) func() error {
		return func() error {
			if got := e.ns.NumSubscriptions(); got != base+uint32(subs) {
				return fmt.Errorf("NATS server has %d subscriptions, want %d", got, base+uint32(subs))
			}
			if got := val(e.m.Subscriptions); got != float64(subs) {
				return fmt.Errorf("Subscriptions gauge = %v, want %d", got, subs)
			}
			return nil
		}
	}
	if err := check(0)(); err != nil {
		t.Fatal(err)
	}
	// The subscription is confirmed before the 101, so no waiting here.
	x1 := e.dial("x", nil)
	if err := check(1)(); err != nil {
		t.Fatal(err)
	}
	x2 := e.dial("x", nil)
	y := e.dial("y", nil)
	if err := check(2)(); err != nil {
		t.Fatal(err)
	}

	x1.Close(websocket.StatusNormalClosure, "")
	eventually(t, 10*time.Second, func() error {
		if got := val(e.m.Connections); got != 2 {
			return fmt.Errorf("Connections = %v, want 2", got)
		}
		return nil
	})
	if err := check(2)(); err != nil {
		t.Fatal(err)
	}
	x2.Close(websocket.StatusNormalClosure, "")
	eventually(t, 10*time.Second, check(1))
	y.Close(websocket.StatusNormalClosure, "")
	eventually(t, 10*time.Second, check(0))
	if got := val(e.m.Disconnects.With(disconnectClientClosed)); got != 3 {
		t.Errorf("Disconnects{client_closed} = %v, want 3", got)
	}
}

// Clients join and leave one channel concurrently, so joins race the last
// leave. Each client must get a message published right after its upgrade,
// and the subscription must be gone once everyone has left.
func TestJoinLeaveRaceKeepsSubscriptionsRight(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	base := e.ns.NumSubscriptions()
	const workers, rounds = 8, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				c, err := e.tryDial("churn", nil)
				if err != nil {
					t.Errorf("dial: %v", err)
					return
				}
				want := fmt.Sprintf("w%d-r%d", w, r)
				if err := e.pub.Publish("relay.ch.churn", []byte(want)); err != nil {
					t.Error(err)
					return
				}
				for {
					_, b, err := readTimeout(c, 20*time.Second)
					if err != nil {
						t.Errorf("%s: %v (published after the upgrade, never received)", want, err)
						return
					}
					if string(b) == want {
						break
					}
				}
				c.Close(websocket.StatusNormalClosure, "")
			}
		})
	}
	wg.Wait()
	eventually(t, 10*time.Second, func() error {
		if got := e.ns.NumSubscriptions(); got != base {
			return fmt.Errorf("NATS server has %d subscriptions, want %d", got, base)
		}
		if got := val(e.m.Subscriptions); got != 0 {
			return fmt.Errorf("Subscriptions gauge = %v", got)
		}
		return nil
	})
	e.srv.hub.mu.Lock()
	nch, nsubs := len(e.srv.hub.channels), len(e.srv.hub.subs)
	e.srv.hub.mu.Unlock()
	if nch != 0 || nsubs != 0 {
		t.Errorf("hub still holds %d channels, %d subscriptions", nch, nsubs)
	}
}

func TestFrameTypeFollowsHeaderAndUTF8(t *testing.T) {
	t.Parallel()
	e := startEnv(t, nil)
	c := e.dial("types", nil)
	invalid := []byte{'a', 0xff, 0xfe, 'b'}
	tests := []struct {
		name   string
		format string
		data   []byte
		want   websocket.MessageType
	}{
		{"utf8 without header", "", []byte("héllo"), websocket.MessageText},
		{"invalid utf8 without header", "", invalid, websocket.MessageBinary},
		{"header text", subjects.FormatText, []byte("line"), websocket.MessageText},
		{"header binary on valid utf8", subjects.FormatBinary, []byte("looks like text"), websocket.MessageBinary},
		{"header text on invalid utf8", subjects.FormatText, invalid, websocket.MessageBinary},
		{"empty message", "", []byte{}, websocket.MessageText},
		{"unknown header value", "gzip", []byte("x"), websocket.MessageText},
	}
	for _, tt := range tests {
		m := nats.NewMsg("relay.ch.types")
		m.Data = tt.data
		if tt.format != "" {
			m.Header.Set(subjects.FormatHeader, tt.format)
		}
		if err := e.pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	e.flush()
	for _, tt := range tests {
		typ, b := read(t, c, 10*time.Second)
		if typ != tt.want || !bytes.Equal(b, tt.data) {
			t.Errorf("%s: got %v %q, want %v %q", tt.name, typ, b, tt.want, tt.data)
		}
	}
}

func TestEncodeSharesPayload(t *testing.T) {
	t.Parallel()
	data := []byte("shared")
	m := encode("c", &nats.Msg{Data: data})
	if &m.data[0] != &data[0] {
		t.Error("encode copied the payload")
	}
}

// NATS itself drops messages for the fanout's subscription (pending limit 1
// and a flood): the channel's clients must be closed with 1008, counted, and
// other channels left alone.
func TestNATSSlowConsumerClosesChannelClients(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(o *Options) {
		o.Config.SubPendingMsgs = 1
		o.Config.SubPendingBytes = 1 << 20
		o.Config.ClientQueue = 1 << 20 // only NATS may be the slow one here
		o.Config.ClientQueueBytes = 256 << 20
		o.Config.ClientQueueMaxBytes = 256 << 20
	})
	a := e.dial("flood", nil)
	b := e.dial("quiet", nil)
	result := make(chan error, 1)
	go func() {
		_, err := readErr(a, 60*time.Second)
		result <- err
	}()

	payload := bytes.Repeat([]byte("x"), 100)
	eventually(t, 30*time.Second, func() error {
		for range 2000 {
			e.publish("flood", payload)
		}
		e.flush()
		if val(e.m.SlowConsumers.With(metrics.SlowNATS)) == 0 {
			return errors.New("no NATS slow consumer yet")
		}
		return nil
	})
	var err error
	select {
	case err = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("client on the flooded channel was not closed")
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != reasonSlowConsumer {
		t.Fatalf("flooded client: got %v, want close 1008 %q", err, reasonSlowConsumer)
	}
	if got := val(e.m.Disconnects.With(disconnectNATSSlowConsumer)); got != 1 {
		t.Errorf("Disconnects{nats_slow_consumer} = %v, want 1", got)
	}
	if got := val(e.m.SlowConsumers.With(metrics.SlowClient)); got != 0 {
		t.Errorf("SlowConsumers{client} = %v, want 0", got)
	}

	e.publish("quiet", []byte("still here"))
	e.flush()
	if _, got := read(t, b, 10*time.Second); string(got) != "still here" {
		t.Errorf("other channel got %q", got)
	}
}
