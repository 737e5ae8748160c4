package fanout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// BenchmarkBroadcast measures the NATS callback: encode once, enqueue on
// every client of the channel. The clients' queues are emptied now and then
// as their writers would.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			m := metrics.New().Fanout
			h := newHub(nil, mustMapper(b), m, discard, 1, 1, time.Second)
			ch := &channel{h: h, name: "bench", ready: make(chan struct{})}
			lim := clientLimits{queueMsgs: 1024, queueBytes: 8 << 20, maxBytes: 8 << 20, slowGrace: time.Hour, closeGrace: time.Second}
			clients := make([]*client, n)
			for i := range clients {
				clients[i] = newClient("bench", lim, m, discard)
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
			b.StopTimer()
			if v := val(m.SlowConsumers.With(metrics.SlowClient)); v != 0 {
				b.Fatalf("%v slow consumers", v)
			}
		})
	}
}

// BenchmarkWrite measures one client's write path over loopback TCP, from
// enqueue to the receiver having read the message, and reports the write
// syscalls per message (the process's, from /proc/self/io: the receiver
// only reads): a burst of queued messages shares one.
func BenchmarkWrite(b *testing.B) {
	for _, burst := range []int{1, 16, 64} {
		for _, size := range []int{100, 4096} {
			b.Run(fmt.Sprintf("burst=%d/size=%d", burst, size), func(b *testing.B) {
				benchWrite(b, burst, size)
			})
		}
	}
}

func benchWrite(b *testing.B, burst, size int) {
	conn, rc := wsPair(b)
	lim := clientLimits{queueMsgs: 1024, queueBytes: 8 << 20, maxBytes: 8 << 20, slowGrace: time.Hour,
		writeTimeout: 10 * time.Second, closeGrace: time.Second}
	c := newClient("bench", lim, metrics.New().Fanout, discard)
	c.attach(conn, nil)
	served := make(chan struct{})
	go func() { c.serve(); close(served) }()

	got := make(chan struct{}, 1024)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			_, r, err := rc.Reader(context.Background()) // no timer: allocs/op is the server side
			if err != nil {
				return
			}
			for {
				if _, err := r.Read(buf); err != nil {
					break
				}
			}
			got <- struct{}{}
		}
	}()

	msg := newMessage(websocket.MessageText, []byte(strings.Repeat("x", size)))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	writes := procWrites(b)
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		k := min(burst, b.N-sent)
		for range k {
			if !c.enqueue(msg) {
				b.Fatal("queue full")
			}
		}
		for range k {
			<-got
		}
		sent += k
	}
	b.StopTimer()
	b.ReportMetric(float64(procWrites(b)-writes)/float64(b.N), "writes/msg")
	c.close(websocket.StatusNormalClosure, "", disconnectShutdown)
	<-served
}

func mustMapper(tb testing.TB) subjects.Mapper {
	tb.Helper()
	m, err := subjects.NewMapper("relay")
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// BenchmarkFanout measures the whole fan-out path: a NATS publisher sends
// bursts of 100-byte messages to one channel with n WebSocket receivers
// (real server, real sockets, coder/websocket clients); an op is one
// message delivered to all n. It reports the process's write syscalls per
// delivery (/proc/self/io; NATS's and the publisher's writes included, the
// receivers only read): the hub wakes the writers once per burst, so a
// burst leaves in about one write per client.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 500} {
		for _, burst := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("clients=%d/burst=%d", n, burst), func(b *testing.B) {
				benchFanout(b, n, burst)
			})
		}
	}
}

func benchFanout(b *testing.B, n, burst int) {
	e := startEnv(b, func(o *Options) { o.Logger = discard })
	var got atomic.Int64
	for range n {
		c := e.dial("bench", nil)
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
	b.ReportAllocs()
	writes := procWrites(b)
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		k := min(burst, b.N-sent)
		for range k {
			if err := e.pub.Publish("relay.ch.bench", payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.pub.Flush(); err != nil {
			b.Fatal(err)
		}
		sent += k
		for deadline := time.Now().Add(time.Minute); got.Load() < int64(sent*n); {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d deliveries", got.Load(), sent*n)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(procWrites(b)-writes)/float64(b.N*n), "writes/delivery")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// procWrites is how many write syscalls (write, writev, sendmsg...) this
// process has made: syscw in /proc/self/io (Linux). Elsewhere it is 0.
func procWrites(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscw:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				tb.Fatalf("/proc/self/io: %v", err)
			}
			return n
		}
	}
	return 0
}
