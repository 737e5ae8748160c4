package fanout

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/metrics"
)

// BenchmarkEnvelopeFanout compares plain and relay.v1.json receivers on the
// whole fan-out path (real server, real sockets, coder/websocket clients):
// n receivers of one channel, bursts of 100-byte messages from a NATS
// publisher; an op is one message delivered to all n. The envelope is
// encoded once per message, so its cost per delivery is the larger frame,
// not an encoding per client. Compare deliveries/s of the two modes of one
// run (docs/benchmarks.md).
func BenchmarkEnvelopeFanout(b *testing.B) {
	for _, n := range []int{100, 500} {
		for _, mode := range []string{"plain", "envelope"} {
			b.Run(fmt.Sprintf("clients=%d/%s", n, mode), func(b *testing.B) {
				var protos []string
				if mode == "envelope" {
					protos = []string{SubprotocolJSON}
				}
				e := startEnv(b, func(o *Options) { o.Logger = discard; o.Config.MaxConnections = 4000 })
				conns := make([]*websocket.Conn, n)
				for i := range conns {
					conns[i] = e.dialBench("bench", protos)
				}
				benchDeliver(b, e, conns, func(int) string { return "bench" }, n, 16)
			})
		}
	}
}

// BenchmarkWildcardFanout compares a wildcard watcher set with single-
// channel watchers over the same 1,000 channels and the same messages (one
// to each channel per round, in bursts): "channels" is 1,000 watchers, one
// per channel (1,000 subscriptions, one delivery per message); "pattern=W"
// is W watchers of bench.* (one subscription, W deliveries per message). An
// op is one delivery; ns/delivery and cpu-ns/delivery (the whole process:
// NATS, fanout and the clients) compare the cost of a delivery.
func BenchmarkWildcardFanout(b *testing.B) {
	const channels = 1000
	name := func(i int) string { return fmt.Sprintf("bench.c%d", i%channels) }
	b.Run("channels=1000/watchers=1000", func(b *testing.B) {
		e := startEnv(b, func(o *Options) { o.Logger = discard; o.Config.MaxConnections = 4000 })
		conns := make([]*websocket.Conn, channels)
		for i := range conns {
			conns[i] = e.dialBench(name(i), []string{SubprotocolJSON})
		}
		benchDeliver(b, e, conns, name, 1, 64)
	})
	for _, w := range []int{1, 10} {
		b.Run(fmt.Sprintf("channels=1000/pattern/watchers=%d", w), func(b *testing.B) {
			e := startEnv(b, func(o *Options) { o.Logger = discard; o.Config.MaxConnections = 4000 })
			conns := make([]*websocket.Conn, w)
			for i := range conns {
				conns[i] = e.dialBench("bench.*", []string{SubprotocolJSON})
			}
			benchDeliver(b, e, conns, name, w, 64)
		})
	}
}

// dialBench opens a receiver for a benchmark (no per-read deadline).
func (e *env) dialBench(path string, protos []string) *websocket.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL+"/ws/"+path, &websocket.DialOptions{Subprotocols: protos})
	if err != nil {
		e.t.Fatalf("dial %s: %v", path, err)
	}
	c.SetReadLimit(1 << 20)
	e.t.Cleanup(func() { c.CloseNow() })
	return c
}

// benchDeliver publishes 100-byte messages, message i to channel(i), in
// bursts, and waits for each burst's deliveries (each message reaches
// perMsg of conns, which read everything they are sent), until b.N
// deliveries; an op is one delivery.
func benchDeliver(b *testing.B, e *env, conns []*websocket.Conn, channel func(int) string, perMsg, burst int) {
	var got atomic.Int64
	for _, c := range conns {
		go func() {
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	payload := []byte(strings.Repeat("x", 100))
	cpu0 := cpuNanos()
	b.ReportAllocs()
	b.ResetTimer()
	sent, want := 0, int64(0)
	for want < int64(b.N) {
		for range burst {
			if err := e.pub.Publish("relay.ch."+channel(sent), payload); err != nil {
				b.Fatal(err)
			}
			sent++
			want += int64(perMsg)
		}
		if err := e.pub.Flush(); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); got.Load() < want; {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d deliveries", got.Load(), want)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.StopTimer()
	d := float64(want)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/d, "ns/delivery")
	b.ReportMetric(float64(cpuNanos()-cpu0)/d, "cpu-ns/delivery")
	b.ReportMetric(d/b.Elapsed().Seconds(), "deliveries/s")
}

// cpuNanos is the process's user+system CPU time so far.
func cpuNanos() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkBroadcastEnvelope is BenchmarkBroadcast with 1,000 plain or
// 1,000 envelope clients: the NATS callback's cost per message, where the
// envelope adds one encoding per message (not per client).
func BenchmarkBroadcastEnvelope(b *testing.B) {
	for _, mode := range []string{"plain", "envelope"} {
		b.Run(mode, func(b *testing.B) {
			m := metrics.New().Fanout
			h := newHub(nil, mustMapper(b), m, discard, 1, 1, time.Second)
			ch := &channel{h: h, name: "bench", ready: make(chan struct{})}
			lim := clientLimits{queueMsgs: 1024, queueBytes: 8 << 20, maxBytes: 8 << 20, slowGrace: time.Hour, closeGrace: time.Second}
			clients := make([]*client, 1000)
			for i := range clients {
				clients[i] = newClient("bench", lim, m, discard)
				clients[i].envelope = mode == "envelope"
				ch.add(clients[i])
			}
			msg := &nats.Msg{Subject: "relay.ch.bench", Data: []byte(strings.Repeat("x", 100))}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				ch.deliver(msg)
				if i%512 == 511 {
					for _, c := range clients {
						c.mu.Lock()
						c.feed.done(c.feed.take())
						c.mu.Unlock()
					}
				}
			}
		})
	}
}
