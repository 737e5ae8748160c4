package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/relaydev/relay/shared/testutil"
)

// The tests in this file SIGKILL one relay process under load — no drain,
// no goodbye — and count from outside what the senders wrote and what the
// watchers received (docs/guarantees.md, issue 11 deliverable 9).

// TestIngestSIGKILL: `relay ingest` (split mode) is SIGKILLed under 2
// senders. The senders see their connection end (EOF or reset) with no -ERR
// line: nobody is left to count for them. The fanout is another process:
// its watchers stay connected, and each holds, per sender, a gap-free prefix
// of the numbering — what ingest had published — and nothing after a gap.
// A new ingest takes new senders, and their lines reach the same watchers.
func TestIngestSIGKILL(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	natsURL := "RELAY_NATS_URL=" + srv.ClientURL()
	hs, ingestHTTP, fanoutAddr := freePort(t), freePort(t), freePort(t)
	ingest := startRelay(t, []string{natsURL, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP}, "ingest")
	startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + fanoutAddr, burstQueue}, "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")

	const channel = "kill"
	var watchers []*wsReceiver
	for range 2 {
		watchers = append(watchers, dialWS(t, "ws://"+fanoutAddr+"/ws/"+channel))
	}
	waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 2)
	var senders []*numberedSender
	for i := range 2 {
		senders = append(senders, startNumberedSender(t, hs, channel, fmt.Sprintf("s%d", i), 1000))
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, w := range watchers {
			if w.count() < 1000 {
				return fmt.Errorf("watcher %d has %d lines", i, w.count())
			}
		}
		return nil
	})

	killedAt := time.Now()
	ingest.cmd.Process.Signal(syscall.SIGKILL)
	var noticed time.Duration
	for _, s := range senders {
		select {
		case <-s.replied:
		case <-time.After(30 * time.Second):
			t.Fatalf("sender %s: connection still open 30s after SIGKILL", s.name)
		}
		noticed = max(noticed, time.Since(killedAt))
		s.stopped.Store(true)
		<-s.wrote
		if r := s.replyText(); r != "" {
			t.Errorf("sender %s got %q after SIGKILL, want no line (the process is gone)", s.name, r)
		}
	}
	<-ingest.done

	// Everything ingest published is in NATS's hands once its connection is
	// gone; a marker published after that through a new ingest reaches the
	// watchers after it (one NATS server, one fanout subscription: in order).
	testutil.Eventually(t, 20*time.Second, func() error {
		if nodeOf([]*server.Server{srv}, "relay-ingest-") >= 0 {
			return fmt.Errorf("the killed ingest's NATS connection is still open")
		}
		return nil
	})
	hs2, ingestHTTP2 := freePort(t), freePort(t)
	startRelay(t, []string{natsURL, "RELAY_INGEST_LISTENERS=" + hs2 + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP2}, "ingest")
	waitReady(t, "http://"+ingestHTTP2+"/readyz")
	marker := startNumberedSender(t, hs2, channel, "m", 100)
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, w := range watchers {
			if countOf(w.messages(), "m") == 0 {
				return fmt.Errorf("watcher %d: no line from the new ingest yet", i)
			}
		}
		return nil
	})
	if r := marker.finish(t); strings.Contains(r, "-ERR") {
		t.Errorf("sender on the new ingest: %q", r)
	}

	var got []map[string]int64
	for i, w := range watchers {
		select {
		case <-w.closed:
			t.Errorf("watcher %d closed with %d: the fanout was not killed", i, w.status)
		default:
		}
		n, err := gapFree(w.messages())
		if err != nil {
			t.Errorf("watcher %d: %v", i, err)
		}
		got = append(got, n)
	}
	var report []string
	for _, s := range senders {
		written := s.written.Load()
		for i, n := range got {
			if n[s.name] > written {
				t.Errorf("watcher %d has %d lines of %s, which wrote %d", i, n[s.name], s.name, written)
			}
			if n[s.name] != got[0][s.name] {
				t.Errorf("watchers 0 and %d hold %d and %d lines of %s", i, got[0][s.name], n[s.name], s.name)
			}
		}
		s.mu.Lock()
		werr := s.writeErr
		s.mu.Unlock()
		report = append(report, fmt.Sprintf("%s wrote %d, delivered %d (%d not, %.1f%%; write error %v)",
			s.name, written, got[0][s.name], written-got[0][s.name], 100*float64(written-got[0][s.name])/float64(written), werr))
	}
	t.Logf("relay ingest SIGKILLed under 2 senders x 1k lines/s: connections ended %s after the kill, no -ERR; 2 watchers stayed connected, each a gap-free prefix: %s",
		noticed.Round(time.Millisecond), strings.Join(report, "; "))
}

// TestFanoutSIGKILL: two `relay fanout` processes on one channel; one is
// SIGKILLed under load. Its watchers see the connection end without a close
// frame (1006 in a browser; an EOF or reset to a Go client) at once; the
// other fanout's watchers lose nothing; a watcher that reconnects to the
// surviving fanout gets every line from its first one on, without a gap.
func TestFanoutSIGKILL(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	natsURL := "RELAY_NATS_URL=" + srv.ClientURL()
	hs, ingestHTTP, addrA, addrB := freePort(t), freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{natsURL, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP}, "ingest")
	fanoutA := startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + addrA, burstQueue}, "fanout")
	startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + addrB, burstQueue}, "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+addrA+"/readyz", "http://"+addrB+"/readyz")

	const channel = "kill"
	var onA, onB []*wsReceiver
	for range 2 {
		onA = append(onA, dialWS(t, "ws://"+addrA+"/ws/"+channel))
		onB = append(onB, dialWS(t, "ws://"+addrB+"/ws/"+channel))
	}
	for _, addr := range []string{addrA, addrB} {
		waitFanoutConnections(t, "http://"+addr+"/metrics", 2)
	}
	var senders []*numberedSender
	for i := range 2 {
		senders = append(senders, startNumberedSender(t, hs, channel, fmt.Sprintf("s%d", i), 1000))
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		for i, w := range append(append([]*wsReceiver{}, onA...), onB...) {
			if w.count() < 1000 {
				return fmt.Errorf("watcher %d has %d lines", i, w.count())
			}
		}
		return nil
	})

	killedAt := time.Now()
	fanoutA.cmd.Process.Signal(syscall.SIGKILL)
	var noticed time.Duration
	for i, w := range onA {
		select {
		case <-w.closed:
		case <-time.After(30 * time.Second):
			t.Fatalf("watcher %d on the killed fanout still connected 30s after SIGKILL", i)
		}
		noticed = max(noticed, time.Since(killedAt))
		if w.status != -1 {
			t.Errorf("watcher %d on the killed fanout: close status %d, want none (the connection ended without a close frame)", i, w.status)
		}
		if _, err := gapFree(w.messages()); err != nil {
			t.Errorf("watcher %d on the killed fanout: %v", i, err)
		}
	}
	// It reconnects, to the fanout that is left, as a browser page would.
	reconnected := dialWS(t, "ws://"+addrB+"/ws/"+channel)
	testutil.Eventually(t, 30*time.Second, func() error {
		if reconnected.count() < 1000 {
			return fmt.Errorf("reconnected watcher has %d lines", reconnected.count())
		}
		return nil
	})

	want := map[string]int{}
	written := 0
	for _, s := range senders {
		if r := s.finish(t); strings.Contains(r, "-ERR") {
			t.Errorf("sender %s: %q, want no -ERR (ingest and NATS were not touched)", s.name, r)
		}
		want[s.name] = int(s.written.Load())
		written += want[s.name]
	}
	for i, w := range onB {
		testutil.Eventually(t, 30*time.Second, func() error {
			if w.count() < written {
				return fmt.Errorf("watcher %d on the surviving fanout has %d of %d lines", i, w.count(), written)
			}
			return nil
		})
		if err := checkOrder(w.messages(), want); err != nil {
			t.Errorf("watcher %d on the surviving fanout: %v", i, err)
		}
	}
	first, err := fromFirstLine(reconnected.messages(), want)
	if err != nil {
		t.Errorf("reconnected watcher: %v", err)
	}
	var lostA []string
	for i, w := range onA {
		lostA = append(lostA, fmt.Sprintf("watcher %d had %d", i, w.count()))
	}
	t.Logf("relay fanout SIGKILLed, 2 senders x 1k lines/s, 2 watchers on each of 2 fanouts: the killed fanout's watchers saw the connection end without a close frame %s after the kill (%s, all gap-free); written %d, each watcher on the other fanout got all %d; a watcher reconnected to it got every line from its first (%v) on",
		noticed.Round(time.Millisecond), strings.Join(lostA, ", "), written, written, first)
}

// fromFirstLine checks that msgs hold, for every sender in want, the lines
// from the first one received up to want[sender]-1 with none missing, and
// returns each sender's first number.
func fromFirstLine(msgs []string, want map[string]int) (map[string]int, error) {
	first, next := map[string]int{}, map[string]int{}
	for _, m := range msgs {
		name, num, ok := strings.Cut(m, " ")
		seq, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != seqWidth {
			return first, fmt.Errorf("malformed line %q", m)
		}
		if _, seen := next[name]; !seen {
			first[name], next[name] = seq, seq
		}
		if seq != next[name] {
			return first, fmt.Errorf("sender %s: got %d after %d: %d missing", name, seq, next[name]-1, seq-next[name])
		}
		next[name]++
	}
	for name, n := range want {
		if next[name] != n {
			return first, fmt.Errorf("sender %s: up to %d of %d", name, next[name], n)
		}
	}
	return first, nil
}
