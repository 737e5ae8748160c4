package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// TestBurstKeepsDrainingWatchers is issue 11 finding 4 from outside: `relay
// all` with its default limits, one sender writes 5,000 lines of 100 bytes
// unpaced (500 KB, what `cat log | nc` does), 4 watchers read as fast as
// they can. Every watcher gets every line, none is closed, and the fanout
// counts no slow consumer. (Before the queue was judged by draining, all 4
// were closed with 1008 "slow consumer".)
func TestBurstKeepsDrainingWatchers(t *testing.T) {
	t.Parallel()
	fixed, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=burst/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")

	const watchers, n = 4, 5000
	ws := make([]*wsReceiver, watchers)
	for i := range ws {
		ws[i] = dialWS(t, "ws://"+httpAddr+"/ws/burst")
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(metricsText(t, "http://"+httpAddr+"/metrics"), fmt.Sprintf("relay_fanout_connections %d", watchers)) {
			return fmt.Errorf("waiting for %d WebSocket clients", watchers)
		}
		return nil
	})
	var log strings.Builder
	for i := range n {
		fmt.Fprintf(&log, "burst %d %s\n", i, strings.Repeat("x", 100-len(fmt.Sprintf("burst %d \n", i))))
	}
	if log.Len() != n*100 {
		t.Fatalf("burst is %d bytes, want %d", log.Len(), n*100)
	}
	if err := sendRaw(fixed, "", log.String()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for i, w := range ws {
			select {
			case <-w.closed:
				t.Fatalf("watcher %d closed with %d after %d of %d lines", i, w.status, w.count(), n)
			default:
			}
			if got := w.count(); got < n {
				return fmt.Errorf("watcher %d has %d of %d lines", i, got, n)
			}
		}
		return nil
	})
	for i, w := range ws {
		msgs := w.messages()
		for j := range msgs {
			msgs[j] = strings.TrimRight(msgs[j], "x")
		}
		if err := checkOrder(msgs, map[string]int{"burst": n}); err != nil {
			t.Errorf("watcher %d: %v", i, err)
		}
		select {
		case <-w.closed:
			t.Errorf("watcher %d closed with %d", i, w.status)
		default:
		}
	}
	if m := metricsText(t, "http://"+httpAddr+"/metrics"); !strings.Contains(m, fmt.Sprintf("relay_fanout_connections %d", watchers)) ||
		strings.Contains(m, `relay_fanout_slow_consumers_total{kind="client"} 1`) {
		t.Errorf("fanout metrics: want %d connections and no slow consumer:\n%s", watchers, grepLines(m, "relay_fanout_connections", "slow_consumer"))
	}
	t.Logf("relay all: %d lines of 100 B unpaced, %d watchers got all of them, none closed", n, watchers)
}

// grepLines returns the lines of s that contain any of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
