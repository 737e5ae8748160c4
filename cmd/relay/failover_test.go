package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
)

// maxFailover is how soon a tier must be connected to another NATS node
// after the one it was on dies (issue 11, deliverable 5).
const maxFailover = 2 * time.Second

// TestNATSNodeLoss runs `relay ingest` and `relay fanout` (the built
// binary) against a three-node NATS cluster, each given every node's URL,
// and kills a node under load: 4 senders writing numbered lines, 3 watchers
// counting. Whichever tier was on the dead node is connected to another
// within maxFailover, and nothing is lost silently: a watcher that stays
// connected has every sender's lines without a gap, a watcher of a fanout
// that lost its node is closed with 1012 (and one that reconnects gets the
// rest without a gap), a sender that lost anything was told with -ERR.
func TestNATSNodeLoss(t *testing.T) {
	t.Parallel()
	for _, kill := range []string{"ingest's node", "fanout's node", "a node neither uses"} {
		t.Run(kill, func(t *testing.T) {
			t.Parallel()
			nodeLoss(t, kill)
		})
	}
}

func nodeLoss(t *testing.T, kill string) {
	nodes := testutil.NATSCluster(t, 3)
	urls := "RELAY_NATS_URL=" + testutil.ClientURLs(nodes...)

	hs, ingestHTTP := freePort(t), freePort(t)
	startRelay(t, []string{urls, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_LOG_LEVEL=debug"}, "ingest")
	waitReady(t, "http://"+ingestHTTP+"/readyz")
	ingestNode := nodeOf(nodes, "relay-ingest-")

	// nats.go picks a node at random; start the fanout again until it is on
	// another node than ingest, so that each kill hits one tier only.
	var fanoutAddr string
	fanoutNode := -1
	for attempt := 0; fanoutNode < 0 || fanoutNode == ingestNode; attempt++ {
		if attempt == 20 {
			t.Fatal("fanout always landed on ingest's NATS node")
		}
		fanoutAddr = freePort(t)
		p := startRelay(t, []string{urls, "RELAY_FANOUT_ADDR=" + fanoutAddr, burstQueue, "RELAY_LOG_LEVEL=debug"}, "fanout")
		waitReady(t, "http://"+fanoutAddr+"/readyz")
		if fanoutNode = nodeOf(nodes, "relay-fanout-"); fanoutNode == ingestNode {
			p.cmd.Process.Kill()
			<-p.done
			testutil.Eventually(t, 10*time.Second, func() error {
				if nodeOf(nodes, "relay-fanout-") >= 0 {
					return fmt.Errorf("old fanout still connected")
				}
				return nil
			})
		}
	}
	victim := map[string]int{"ingest's node": ingestNode, "fanout's node": fanoutNode, "a node neither uses": 3 - ingestNode - fanoutNode}[kill]
	t.Logf("ingest on node %d, fanout on node %d; killing node %d (%s)", ingestNode, fanoutNode, victim, kill)

	const channel = "failover"
	var watchers []*wsReceiver
	for range 3 {
		watchers = append(watchers, dialWS(t, "ws://"+fanoutAddr+"/ws/"+channel))
	}
	waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 3)

	const rate = 500 // lines/s per sender
	var senders []*numberedSender
	for i := range 4 {
		senders = append(senders, startNumberedSender(t, hs, channel, fmt.Sprintf("s%d", i), rate))
	}
	time.Sleep(time.Second) // load before the kill

	// Kill the node: its clients' and routes' sockets close at once, as
	// when the process dies. The tiers were on it or not; either way each
	// must be on a live node within maxFailover.
	killedAt := time.Now()
	nodes[victim].Shutdown()
	reconnect := map[string]time.Duration{}
	for _, tier := range []string{"ingest", "fanout"} {
		on := map[string]int{"ingest": ingestNode, "fanout": fanoutNode}[tier]
		if on != victim {
			continue
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			if n := nodeOf(nodes, "relay-"+tier+"-"); n < 0 || n == victim {
				return fmt.Errorf("%s not yet on a live node", tier)
			}
			return nil
		})
		reconnect[tier] = time.Since(killedAt)
	}
	// Senders continue through the failover and a while after it.
	time.Sleep(1500 * time.Millisecond)

	var written, refused int64
	replies := map[string]string{}
	for _, s := range senders {
		replies[s.name] = s.finish(t)
		written += s.written.Load()
		if s.refused() {
			refused++
		}
	}

	fanoutHit := victim == fanoutNode
	// A watcher of a fanout that lost its node missed what was published
	// meanwhile: it must be told (1012), never left connected with a gap.
	var delivered, silent int64 // silent: lines of untold senders missing at watchers still connected
	closed := 0
	for i, w := range watchers {
		if fanoutHit {
			select {
			case <-w.closed:
			case <-time.After(20 * time.Second):
				t.Fatalf("watcher %d still connected after its fanout lost NATS", i)
			}
		}
		select {
		case <-w.closed:
			closed++
			if w.status != websocket.StatusServiceRestart {
				t.Errorf("watcher %d closed with %d, want 1012", i, w.status)
			}
			if _, err := gapFree(w.messages()); err != nil {
				t.Errorf("watcher %d (closed with %d): %v", i, w.status, err)
			}
			delivered += int64(w.count())
			continue
		default:
		}
		// Stayed connected: every accepted line, in order, without a gap.
		// A gap never fills: report it (after the figures) and stop waiting.
		testutil.Eventually(t, 30*time.Second, func() error {
			counts, err := gapFree(w.messages())
			if err != nil {
				t.Errorf("watcher %d stayed connected: %v", i, err)
				return nil
			}
			for _, s := range senders {
				if got, want := counts[s.name], s.written.Load(); got < want && !s.refused() {
					return fmt.Errorf("watcher %d has %d of sender %s's %d lines", i, got, s.name, want)
				}
			}
			return nil
		})
		delivered += int64(w.count())
		for _, s := range senders {
			if !s.refused() {
				silent += s.written.Load() - countOf(w.messages(), s.name)
			}
		}
	}
	for _, s := range senders {
		if r := replies[s.name]; r != "" && !strings.HasPrefix(r, "-ERR") {
			t.Errorf("sender %s: unexpected reply %q", s.name, r)
		}
	}

	// After the fanout's failover a new watcher gets everything from its
	// first line on without a gap.
	if fanoutHit {
		waitReady(t, "http://"+fanoutAddr+"/readyz")
		w := dialWS(t, "ws://"+fanoutAddr+"/ws/"+channel)
		waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 1)
		s := startNumberedSender(t, hs, channel, "after", rate)
		time.Sleep(500 * time.Millisecond)
		s.finish(t)
		testutil.Eventually(t, 20*time.Second, func() error {
			counts, err := gapFree(w.messages())
			if err != nil {
				t.Fatalf("watcher after failover: %v", err)
			}
			if got := counts["after"]; got < s.written.Load() {
				return fmt.Errorf("watcher after failover has %d of %d", got, s.written.Load())
			}
			return nil
		})
	}

	for tier, d := range reconnect {
		if d > maxFailover {
			t.Errorf("%s reconnected %s after the kill, want within %s", tier, d.Round(time.Millisecond), maxFailover)
		}
	}
	t.Logf("killed %s: reconnect %v; 4 senders wrote %d lines (%d senders told -ERR); 3 watchers: %d closed with 1012, %d lines delivered in all, %d missing silently at watchers still connected",
		kill, fmtDurations(reconnect), written, refused, closed, delivered, silent)
}

// countOf counts the lines of sender name in msgs.
func countOf(msgs []string, name string) int64 {
	var n int64
	for _, m := range msgs {
		if strings.HasPrefix(m, name+" ") {
			n++
		}
	}
	return n
}

func fmtDurations(m map[string]time.Duration) string {
	if len(m) == 0 {
		return "none needed"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %s", k, v.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}
