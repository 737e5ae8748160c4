package ingest

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// BenchmarkSenderUnderControlFlood: a line sender publishing as fast as it
// can, alone ("quiet") and while a NATS client floods its channel's
// control subject with 1 KB messages it never reads ("flooded": its queue
// stays full, the newest are dropped). The ratio of the two msgs/s is what
// the flood costs the sender's own upstream.
//
//	go test -run '^$' -bench BenchmarkSenderUnderControlFlood -count 5 ./ingest
func BenchmarkSenderUnderControlFlood(b *testing.B) {
	for _, mode := range []string{"quiet", "flooded"} {
		b.Run(mode, func(b *testing.B) {
			h := startControlIngest(b, nil, "127.0.0.1:0=*/line", 256, time.Minute)
			obs := testutil.Connect(b, h.srv)
			sub, err := obs.SubscribeSync("relay.ch.dev.flood")
			if err != nil {
				b.Fatal(err)
			}
			sub.SetPendingLimits(-1, -1)
			obs.Flush()
			ev, _ := obs.SubscribeSync("relay.ev.dev.flood")
			obs.Flush()

			c, err := net.DialTimeout("tcp", h.addr(0), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "dev.flood\n")
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); err != nil || line != "+OK\n" {
				b.Fatalf("handshake %q %v", line, err)
			}
			if _, err := ev.NextMsg(10 * time.Second); err != nil {
				b.Fatal("no presence event:", err)
			}
			stop := make(chan struct{})
			flooded := make(chan int, 1)
			if mode == "flooded" {
				pub := testutil.Connect(b, h.srv)
				payload := []byte(strings.Repeat("c", 1000))
				go func() {
					n := 0
					for {
						select {
						case <-stop:
							flooded <- n
							return
						default:
						}
						pub.Publish("relay.ctl.dev.flood", payload)
						n++
						if n%256 == 0 {
							pub.Flush()
						}
					}
				}()
			}
			line := strings.Repeat("d", 99) + "\n"
			w := bufio.NewWriterSize(c, 64<<10)
			b.ResetTimer()
			go func() {
				for range b.N {
					w.WriteString(line)
				}
				w.Flush()
			}()
			for i := range b.N {
				if _, err := sub.NextMsg(30 * time.Second); err != nil {
					b.Fatalf("message %d: %v", i, err)
				}
			}
			b.StopTimer()
			close(stop)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if mode == "flooded" {
				b.ReportMetric(float64(<-flooded)/b.Elapsed().Seconds(), "ctl-msgs/s")
			}
		})
	}
}
