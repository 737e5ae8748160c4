package loadgen

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkLoopbackFloor measures the machine's floor for fan-out latency
// (floorRig): one op is one 100-byte message (with a WebSocket frame
// header's 2 bytes) written to R plain loopback TCP connections from every
// core, until the last of R reading goroutines has it. ns/op is the least
// time a message can take to reach all R receivers on this machine.
// docs/benchmarks.md compares relay with it; `relay bench --floor` runs the
// same rig.
func BenchmarkLoopbackFloor(b *testing.B) {
	for _, r := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("receivers=%d", r), func(b *testing.B) {
			f, err := newFloorRig(r, 102)
			if err != nil {
				b.Fatal(err)
			}
			defer f.close()
			ctx := context.Background()
			for b.Loop() {
				if err := f.send(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(r)/1e3, "µs/delivery")
		})
	}
}

// TestFloor: every receiver gets every message, each delivery's latency is
// recorded, and the report says what was measured.
func TestFloor(t *testing.T) {
	res, err := Run(context.Background(), Config{
		Mode: ModeFloor, Senders: 1, Receivers: 20, Size: 102,
		Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	res.WriteText(&b)
	t.Log(b.String())
	if res.Sent == 0 || res.Deliveries != res.Sent*20 || res.Latency.Count != res.Deliveries {
		t.Fatalf("sent %d, deliveries %d, latency samples %d", res.Sent, res.Deliveries, res.Latency.Count)
	}
	if res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
		t.Fatalf("latency %+v", res.Latency)
	}
	if !strings.Contains(b.String(), "mode floor") || !strings.Contains(b.String(), "one message at a time") {
		t.Fatalf("report:\n%s", b.String())
	}
	// With a rate, messages start no more often than that.
	paced, err := Run(context.Background(), Config{
		Mode: ModeFloor, Senders: 1, Receivers: 5, Size: 102, Rate: 50,
		Warmup: 50 * time.Millisecond, Duration: 400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if paced.Sent == 0 || paced.Sent > 21 || paced.Latency.Count != paced.Sent*5 {
		t.Fatalf("at 50 msg/s for 0.4 s: sent %d, %d latency samples", paced.Sent, paced.Latency.Count)
	}
	if err := (Config{Mode: ModeFloor, Senders: 1, Size: 102, Duration: time.Second}).Validate(); err == nil {
		t.Fatal("a floor without receivers was accepted")
	}
}
