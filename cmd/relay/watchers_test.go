package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
)

// TestWatcherStuckOrGone: one channel, three watchers under a steady 2 MB/s
// stream (`relay all`, a 1 MiB queue budget, 2 s slow grace). One reads
// everything; one stops reading; one goes away without a close frame (its
// process ended). The one that went away is noticed at once and counted as
// client_closed; the stuck one, once over its budget and taking no bytes for
// the grace, is closed with 1008 `slow consumer` after a gap-free prefix;
// the reader gets every line written, in order, and is never closed.
func TestWatcherStuckOrGone(t *testing.T) {
	t.Parallel()
	fixed, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=w/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_FANOUT_CLIENT_QUEUE_BYTES=1048576",
		"RELAY_FANOUT_SLOW_GRACE=2s", // a loaded machine may stall the reading watcher for a moment
		"RELAY_FANOUT_WRITE_TIMEOUT=8s",
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")
	metrics := "http://" + httpAddr + "/metrics"

	reader := dialWS(t, "ws://"+httpAddr+"/ws/w")
	gone := dialWatcher(t, "ws://"+httpAddr+"/ws/w")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stuck, _, err := websocket.Dial(ctx, "ws://"+httpAddr+"/ws/w", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.CloseNow()
	waitFanoutConnections(t, metrics, 3)

	// The sender: lines of 1,000 bytes, 20 every 10 ms, until stopped.
	conn, err := net.DialTimeout("tcp", fixed, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var written atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	started := time.Now()
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		pad := strings.Repeat("x", 1000-len("w 00000000 \n"))
		var b strings.Builder
		for seq := 0; ; {
			select {
			case <-stop:
				conn.(*net.TCPConn).CloseWrite()
				return
			case <-tick.C:
			}
			b.Reset()
			for range 20 {
				fmt.Fprintf(&b, "w %0*d %s\n", seqWidth, seq, pad)
				seq++
			}
			conn.SetWriteDeadline(time.Now().Add(time.Minute))
			if _, err := conn.Write([]byte(b.String())); err != nil {
				t.Errorf("sender: %v", err)
				return
			}
			written.Add(20)
		}
	}()

	testutil.Eventually(t, 30*time.Second, func() error {
		if gone.count() < 500 {
			return fmt.Errorf("watcher to go has %d lines", gone.count())
		}
		return nil
	})
	goneAt := time.Now()
	gone.close() // the TCP connection ends without a close frame
	testutil.Eventually(t, 30*time.Second, func() error {
		if v := metricSum(scrape(metrics), `relay_fanout_disconnects_total{reason="client_closed"`); v != 1 {
			return fmt.Errorf("client_closed disconnects: %v", v)
		}
		return nil
	})
	goneNoticed := time.Since(goneAt)

	testutil.Eventually(t, 60*time.Second, func() error {
		if v := metricSum(scrape(metrics), `relay_fanout_disconnects_total{reason="slow_consumer"`); v != 1 {
			return fmt.Errorf("slow_consumer disconnects: %v", v)
		}
		return nil
	})
	stuckCut := time.Since(started)
	writtenAtCut := written.Load()
	close(stop)
	<-stopped
	total := int(written.Load())

	// What the stuck watcher finds when it reads again: what was in its
	// socket, then the close frame.
	var stuckGot []string
	var stuckErr error
	for {
		_, data, err := stuck.Read(ctx)
		if err != nil {
			stuckErr = err
			break
		}
		stuckGot = append(stuckGot, string(data))
	}
	if code := websocket.CloseStatus(stuckErr); code != websocket.StatusPolicyViolation {
		t.Errorf("stuck watcher: %v, want close 1008", stuckErr)
	}
	if _, err := gapFree(trimLines(stuckGot)); err != nil {
		t.Errorf("stuck watcher: %v", err)
	}

	testutil.Eventually(t, 60*time.Second, func() error {
		select {
		case <-reader.closed:
			t.Fatalf("reading watcher closed with %d after %d of %d lines", reader.status, reader.count(), total)
		default:
		}
		if reader.count() < total {
			return fmt.Errorf("reading watcher has %d of %d lines", reader.count(), total)
		}
		return nil
	})
	if n, err := gapFree(trimLines(reader.messages())); err != nil || n["w"] != int64(total) {
		t.Errorf("reading watcher: %v lines, %v; want %d", n["w"], err, total)
	}
	t.Logf("relay all, 2 MB/s of 1,000-byte lines, queue budget 1 MiB, slow grace 2 s: the watcher that went away was counted closed %s after; the stuck one was closed with 1008 %.1f s into the stream (%d lines = %.1f MB written by then), holding a gap-free %d lines; the reading one got all %d lines and stayed connected",
		goneNoticed.Round(time.Millisecond), stuckCut.Seconds(), writtenAtCut, float64(writtenAtCut)/1000, len(stuckGot), total)
}

// trimLines cuts each "<name> <seq> <padding>" line to "<name> <seq>".
func trimLines(msgs []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m[:min(len(m), len("w ")+seqWidth)]
	}
	return out
}
