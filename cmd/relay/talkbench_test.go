package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/config"
)

// BenchmarkControl measures talking back through 'relay all' in this
// process: a WebSocket client's text frame to the TCP senders of its
// channel (fanout -> <prefix>.ctl.<channel> -> ingest -> line framing).
//
//	latency: one frame at a time, round trip client write -> sender read;
//	         p50/p99 in µs.
//	rate/senders=N: frames pipelined (at most 64 in flight, half the
//	         ingest queue used here), messages/s the client sent that every
//	         one of N senders received.
//
//	go test -run '^$' -bench BenchmarkControl -count 5 ./cmd/relay
func BenchmarkControl(b *testing.B) {
	b.Run("latency", func(b *testing.B) {
		fanout, ingest := startControlBenchServer(b)
		ws, senders := controlPair(b, fanout, ingest, "bench.lat", 1)
		r := senders[0]
		lat := make([]time.Duration, 0, b.N)
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			if err := ws.Write(ctx, websocket.MessageText, []byte(strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
			line, err := r.ReadString('\n')
			if err != nil || line != strconv.Itoa(i)+"\n" {
				b.Fatalf("sender read %q %v", line, err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	})
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("rate/senders=%d", n), func(b *testing.B) {
			fanout, ingest := startControlBenchServer(b)
			ws, senders := controlPair(b, fanout, ingest, fmt.Sprintf("bench.rate%d", n), n)
			const window = 64
			var slowest atomic.Int64 // lowest count any sender has read
			read := make([]atomic.Int64, n)
			errc := make(chan error, n)
			total := b.N
			for k, r := range senders {
				go func() {
					for i := range total {
						if _, err := r.ReadString('\n'); err != nil {
							errc <- fmt.Errorf("sender %d, message %d: %v", k, i, err)
							return
						}
						read[k].Store(int64(i + 1))
						low := int64(total)
						for j := range read {
							low = min(low, read[j].Load())
						}
						slowest.Store(low)
					}
					errc <- nil
				}()
			}
			payload := []byte(strings.Repeat("x", 64))
			ctx := context.Background()
			b.ResetTimer()
			for i := range total {
				for int64(i)-slowest.Load() >= window {
					time.Sleep(20 * time.Microsecond)
				}
				if err := ws.Write(ctx, websocket.MessageText, payload); err != nil {
					b.Fatal(err)
				}
			}
			for range senders {
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(total*n)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

func startControlBenchServer(b *testing.B) (fanout, ingest string) {
	b.Helper()
	cfg, err := config.Load()
	if err != nil {
		b.Fatal(err)
	}
	cfg.Ingest.Listeners = config.MustParseListeners("127.0.0.1:0=*/line")
	cfg.Ingest.HTTPAddr = ""
	cfg.Fanout.Addr = "127.0.0.1:0"
	cfg.Ingest.MaxConnectionsPerIP, cfg.Fanout.MaxConnectionsPerIP = 0, 0
	cfg.Ingest.ConnectRatePerIP, cfg.Fanout.ConnectRatePerIP = "", ""
	cfg.ShutdownGrace = 5 * time.Second
	cfg.ControlChannels = []string{"bench.>"}
	cfg.FanoutControlRate = 0 // measure the path, not the limiter
	cfg.IngestControlQueue = 128
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan started, 1)
	done := make(chan error, 1)
	go func() {
		done <- runRoleNotify(ctx, config.RoleAll, cfg, slog.New(slog.DiscardHandler), func(s started) { ready <- s })
	}()
	b.Cleanup(func() { cancel(); <-done })
	select {
	case s := <-ready:
		return s.FanoutAddr.String(), s.IngestAddr[0].String()
	case err := <-done:
		b.Fatal(err)
	}
	return "", ""
}

// controlPair connects n line senders of channel, waits until the fanout
// counts them (so ingest reads the control subject), then a WebSocket client.
func controlPair(b *testing.B, fanout, ingest, channel string, n int) (*websocket.Conn, []*bufio.Reader) {
	b.Helper()
	var readers []*bufio.Reader
	for range n {
		c, err := net.DialTimeout("tcp", ingest, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "%s\n", channel)
		r := bufio.NewReader(c)
		if line, err := r.ReadString('\n'); err != nil || line != "+OK\n" {
			b.Fatalf("handshake: %q %v", line, err)
		}
		readers = append(readers, r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got, _ := channelInfoB(fanout, channel); got == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the fanout never counted the senders")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+fanout+"/ws/"+channel, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ws.CloseNow() })
	return ws, readers
}
