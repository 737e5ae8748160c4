package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/natsconn"
	"github.com/relaydev/relay/shared/tcpproto"
	"github.com/relaydev/relay/shared/testutil"
)

// loopReader serves the same bytes forever, so a benchmark frames an
// endless stream without allocating it.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], l.data[l.off:])
		n += k
		l.off = (l.off + k) % len(l.data)
	}
	return n, nil
}

// BenchmarkFraming measures framer.Next per message, from a 32 KiB bufio
// reader (RELAY_INGEST_READ_BUFFER's default) over an endless stream.
func BenchmarkFraming(b *testing.B) {
	for _, f := range []config.Framing{config.FramingLine, config.FramingLen32, config.FramingRaw} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("%s/size=%d", f, size), func(b *testing.B) {
				payload := strings.Repeat("x", size)
				var stream bytes.Buffer
				for range 64 {
					switch f {
					case config.FramingLine:
						stream.WriteString(payload + "\n")
					case config.FramingLen32:
						binary.Write(&stream, binary.BigEndian, uint32(size))
						stream.WriteString(payload)
					case config.FramingRaw:
						stream.WriteString(payload)
					}
				}
				maxMsg := 65536
				if f == config.FramingRaw {
					maxMsg = size // raw: one message per maxMsg bytes
				}
				fr, err := newFramer(f, bufio.NewReaderSize(&loopReader{data: stream.Bytes()}, 32<<10), maxMsg)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := fr.Next(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPublish measures what ingest pays per message to hand it to
// NATS, with and without the Relay-Format header (binary messages carry
// it, text ones only with RELAY_INGEST_TEXT_HEADER): nats.go serialises a
// Msg's header map on every PublishMsg.
func BenchmarkPublish(b *testing.B) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	data := []byte(strings.Repeat("x", 64))
	b.Run("header", func(b *testing.B) {
		msg := &nats.Msg{Subject: "relay.ch.bench", Data: data, Header: textHeader}
		b.ReportAllocs()
		for b.Loop() {
			if err := nc.PublishMsg(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("no-header", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := nc.Publish("relay.ch.bench", data); err != nil {
				b.Fatal(err)
			}
		}
	})
	if err := nc.Flush(); err != nil && !errors.Is(err, io.EOF) {
		b.Fatal(err)
	}
}

// BenchmarkSenderThroughput measures what a TCP sender gets end to end
// through a real ingest Server into a real NATS server with JetStream (file
// store in a temporary directory): "core" is a core NATS channel (done when
// ingest has published everything and a flush round trip confirms it),
// "durable" a durable channel with +ack (done when the last +ACK counts every
// message: all stored). b.N messages of 64 B are split over the senders.
// "bare-jetstream" is the yardstick: one nats.go JetStream publisher
// (async, 4096 in flight) storing into the same stream without ingest.
// -count N repeats each sub-benchmark in a row; to alternate them on a
// machine whose load changes, run the test binary N times instead.
func BenchmarkSenderThroughput(b *testing.B) {
	srv := testutil.JetStreamServer(b)
	stream, js := durableStream(b, srv, "bench.durable.>", "bench.bare")
	// Each sub-benchmark starts from an empty stream: a store gets costlier
	// as it grows (one sender repeated in one process went from 16 to 28
	// µs of CPU per message as its subject reached 300,000 messages), and
	// the sub-benchmarks run in a row, so without a purge the last one
	// (10 durable senders) was measured on the fullest stream.
	purge := func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := js.Stream(ctx, "RELAY")
		if err == nil {
			err = st.Purge(ctx)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	h := startIngestWith(b, srv, defaultConfig("127.0.0.1:0=*/line"), stream)
	line := strings.Repeat("x", 63) + "\n"
	b.Run("bare-jetstream", func(b *testing.B) {
		purge(b)
		js, err := jetstream.New(testutil.Connect(b, srv), jetstream.WithPublishAsyncMaxPending(4096))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(64)
		data := []byte(line[:63])
		start, cpu0 := time.Now(), processCPU()
		for range b.N {
			if _, err := js.PublishAsync("relay.ch.bench.bare", data, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			b.Fatal("acks did not come")
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/msg")
	})
	for _, senders := range []int{1, 10} {
		for _, kind := range []string{"core", "durable"} {
			b.Run(fmt.Sprintf("senders=%d/%s", senders, kind), func(b *testing.B) {
				purge(b)
				b.SetBytes(64)
				start, cpu0 := time.Now(), processCPU()
				var wg sync.WaitGroup
				errs := make(chan error, senders)
				for i := range senders {
					n := b.N / senders
					if i < b.N%senders {
						n++
					}
					hs := fmt.Sprintf("bench.core.%d", i)
					if kind == "durable" {
						hs = fmt.Sprintf("bench.durable.%d +ack", i)
					}
					wg.Go(func() { errs <- benchSender(h.addr(0), hs, line, n, kind == "durable") })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				if err := h.ing.nc.Flush(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
				b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/msg")
				if r := ptestutil.ToFloat64(h.m.StoreRetries) + ptestutil.ToFloat64(h.m.PublishRetries); r > 0 {
					b.Logf("%v publishes were sent again", r)
				}
			})
		}
	}
}

// benchSender writes n copies of line after the handshake, half-closes and
// reads the server's replies to its close; with acks the last must be +ACK n.
func benchSender(addr, hs, line string, n int, acks bool) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		w.WriteString(hs + "\n")
		for range n {
			w.WriteString(line)
		}
		w.Flush()
		c.(*net.TCPConn).CloseWrite()
	}()
	out, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	replies := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if replies[0] != tcpproto.OK {
		return fmt.Errorf("replies %q", replies)
	}
	if acks {
		if r := tcpproto.ParseReply(replies[len(replies)-1]); r.Kind != tcpproto.ReplyAck || r.Acked != uint64(n) {
			return fmt.Errorf("last reply %q, want +ACK %d", replies[len(replies)-1], n)
		}
	} else if len(replies) != 1 {
		return fmt.Errorf("replies %q", replies)
	}
	return nil
}

// processCPU is the process's user+system CPU time so far (the NATS server,
// ingest and the senders all run in it): per message, a figure a busy
// machine inflates far less than the wall clock.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
