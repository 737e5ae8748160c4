package fanout

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	stormWatchers = flag.Int("storm.watchers", 1000, "BenchmarkResumeStorm: watchers resuming per iteration")
	stormParallel = flag.Int("storm.parallel", 2000, "BenchmarkResumeStorm: most watchers connected at once (each costs two fds here)")
)

// storeFast stores n messages of size bytes on channel with async acks
// and returns their sequences.
func storeFast(b *testing.B, js jetstream.JetStream, channel string, n, size int) []uint64 {
	b.Helper()
	payload := []byte(strings.Repeat("x", size))
	futures := make([]jetstream.PubAckFuture, 0, n)
	for range n {
		f, err := js.PublishAsync("relay.ch."+channel, payload)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures)%1000 == 0 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	seqs := make([]uint64, n)
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	return seqs
}

// replayN reads n messages from a new connection to url.
func replayN(url string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for i := range n {
		if _, _, err := c.Read(ctx); err != nil {
			return fmt.Errorf("message %d of %d: %w", i, n, err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	return nil
}

// BenchmarkDurableReplay measures a replay of 20,000 stored messages of
// 100 B to one client: from JetStream (ring 0: a per-client ordered
// consumer) and from the ring (ring large enough to hold them all).
// Reported as msgs/s; both sub-benchmarks run against the same kind of
// server, so their ratio is the ring's gain.
func BenchmarkDurableReplay(b *testing.B) {
	const n = 20000
	for _, tc := range []struct {
		name string
		ring int
	}{{"source=stream", 0}, {"source=ring", n}} {
		b.Run(tc.name, func(b *testing.B) {
			e := startDurableB(b, tc.ring)
			live := e.dial("dur.r", nil) // the channel and its ring exist from here
			seqs := storeFast(b, e.js, "dur.r", n, 100)
			go func() { readErr(live, time.Hour) }()
			url := e.wsURL + "/ws/dur.r?since=" + strconv.FormatUint(seqs[0]-1, 10)
			apiBefore := jsAPI(b, e)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if err := replayN(url, n); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(n*b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(jsAPI(b, e)-apiBefore)/float64(b.N), "js-api-req/replay")
		})
	}
}

// BenchmarkResumeStorm: after a pod restart its watchers come back to
// another pod with ?since= a few messages back. Here -storm.watchers
// watchers (at most -storm.parallel connected at once) resume 100 messages
// back on a channel whose ring holds 1,024: resumes/s and the JetStream
// API requests they made (the server's own counter), against the same
// storm with no ring (every resume reads the stream).
func BenchmarkResumeStorm(b *testing.B) {
	const back = 100
	for _, tc := range []struct {
		name string
		ring int
	}{{"ring=1024", 1024}, {"ring=0", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			// Closed clients still count until their teardown ends.
			e := startDurableB(b, tc.ring, func(o *Options) { o.Config.MaxConnections = 3 * *stormParallel })
			live := e.dial("dur.st", nil)
			seqs := storeFast(b, e.js, "dur.st", 1000, 100)
			go func() { readErr(live, time.Hour) }()
			url := e.wsURL + "/ws/dur.st?since=" + strconv.FormatUint(seqs[len(seqs)-back-1], 10)
			apiBefore := jsAPI(b, e)
			b.ResetTimer()
			start := time.Now()
			var failed atomic.Int64
			var firstErr sync.Once
			for range b.N {
				sem := make(chan struct{}, *stormParallel)
				var wg sync.WaitGroup
				for range *stormWatchers {
					sem <- struct{}{}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer func() { <-sem }()
						if err := replayN(url, back); err != nil {
							failed.Add(1)
							firstErr.Do(func() { b.Logf("a resume failed: %v", err) })
						}
					}()
				}
				wg.Wait()
			}
			el := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d resumes failed", f)
			}
			resumes := float64(*stormWatchers * b.N)
			b.ReportMetric(resumes/el.Seconds(), "resumes/s")
			b.ReportMetric(float64(jsAPI(b, e)-apiBefore)/resumes, "js-api-req/resume")
		})
	}
}

// startDurableB is startDurable for benchmarks: no logs (thousands of
// clients come and go), then edit.
func startDurableB(b *testing.B, ring int, edit ...func(*Options)) *durEnv {
	return startDurable(b, ring, 0, func(o *Options) {
		o.Logger = discard
		for _, f := range edit {
			f(o)
		}
	})
}

func jsAPI(b *testing.B, e *durEnv) uint64 {
	v, err := e.ns.Varz(nil)
	if err != nil {
		b.Fatal(err)
	}
	return v.JetStream.Stats.API.Total
}
