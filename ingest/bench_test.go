package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/natsconn"
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
