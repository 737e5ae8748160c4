package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
	"github.com/relaydev/relay/shared/testutil/toxi"
)

// toxicCase is one network fault between a tier and NATS.
type toxicCase struct {
	name  string
	typ   string
	attrs map[string]any
	// outage: NATS is unusable through this toxic, so /readyz must answer
	// 503 while it lasts (and 200 again after healing).
	outage bool
	// usable: NATS is slower but works, well within the ping budget, so
	// /readyz must stay 200. (A link below the load's bandwidth may delay
	// pings past it: either answer is right there.)
	usable bool
}

var toxicCases = []toxicCase{
	{"latency", toxi.Latency, map[string]any{"latency": 250, "jitter": 50}, false, true},
	{"bandwidth", toxi.Bandwidth, map[string]any{"rate": 4}, false, false}, // KB/s: below what the load needs
	{"reset_peer", toxi.ResetPeer, map[string]any{"timeout": 0}, true, false},
	{"slicer", toxi.Slicer, map[string]any{"average_size": 8, "size_variation": 4, "delay": 200}, false, true},
	{"blackhole", toxi.Timeout, map[string]any{"timeout": 0}, true, false},
}

// faultGrace is RELAY_SHUTDOWN_GRACE for the tiers under a fault: short,
// so a shutdown that ignores it shows at once.
const faultGrace = 3 * time.Second

// TestNATSNetworkFaults puts a Toxiproxy proxy (in this process) between
// one tier (the built binary) and NATS and, for each toxic, with 2 senders
// and 2 watchers running: nothing is lost silently (a watcher still
// connected has no gap from a sender that was not told -ERR; a closed one
// got 1012), /readyz answers 503 while NATS is unusable (and stays 200
// while it is merely slow) and 200 after healing, messages flow again after healing, the tier's heap stays
// bounded, its goroutines return to their baseline once the clients have
// gone, and with the fault in place again it still shuts down within its
// grace period.
func TestNATSNetworkFaults(t *testing.T) {
	t.Parallel()
	for _, tier := range []string{"ingest", "fanout"} {
		for _, tc := range toxicCases {
			t.Run(tier+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				networkFault(t, tier, tc)
			})
		}
	}
}

func networkFault(t *testing.T, tier string, tc toxicCase) {
	ns := testutil.NATSServer(t)
	direct := ns.ClientURL()
	proxy := toxi.New(t, strings.TrimPrefix(direct, "nats://"))
	natsFor := map[string]string{"ingest": direct, "fanout": direct}
	natsFor[tier] = proxy.URL()
	common := []string{
		"RELAY_SHUTDOWN_GRACE=" + faultGrace.String(),
		// Notice a blackholed NATS within seconds (the default is 15 s).
		"RELAY_NATS_PING_INTERVAL=1s",
		"RELAY_LOG_LEVEL=debug",
	}

	hs, ingestHTTP, fanoutAddr := freePort(t), freePort(t), freePort(t)
	procs := map[string]*proc{
		"ingest": startRelay(t, append([]string{"RELAY_NATS_URL=" + natsFor["ingest"],
			"RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + ingestHTTP}, common...), "ingest"),
		"fanout": startRelay(t, append([]string{"RELAY_NATS_URL=" + natsFor["fanout"],
			"RELAY_FANOUT_ADDR=" + fanoutAddr, burstQueue}, common...), "fanout"),
	}
	base := map[string]string{"ingest": "http://" + ingestHTTP, "fanout": "http://" + fanoutAddr}[tier]
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")

	// Baseline: the tier connected to NATS, no clients.
	time.Sleep(200 * time.Millisecond)
	m := scrape(base + "/metrics")
	baseGoroutines := metricSum(m, "go_goroutines")
	baseHeap := metricSum(m, "go_memstats_heap_inuse_bytes")

	const channel = "toxic"
	var watchers []*testWatcher
	for range 2 {
		watchers = append(watchers, dialWatcher(t, "ws://"+fanoutAddr+"/ws/"+channel))
	}
	waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 2)
	var senders []*numberedSender
	for i := range 2 {
		senders = append(senders, startNumberedSender(t, hs, channel, fmt.Sprintf("s%d", i), 300))
	}
	time.Sleep(500 * time.Millisecond)

	// The fault, for 1.5 s — or, when it makes NATS unusable, until the
	// tier has noticed (its /readyz says 503), then 1 s more.
	proxy.Add(tc.typ, tc.attrs)
	faultAt := time.Now()
	var saw503 bool
	var noticed time.Duration
	maxHeap := baseHeap
	deadline := faultAt.Add(1500 * time.Millisecond)
	if tc.outage {
		deadline = faultAt.Add(20 * time.Second)
	}
	for time.Now().Before(deadline) {
		if readyStatus(base+"/readyz") == 503 && !saw503 {
			saw503, noticed = true, time.Since(faultAt)
			if tc.outage {
				deadline = time.Now().Add(time.Second)
			}
		}
		maxHeap = max(maxHeap, metricSum(scrape(base+"/metrics"), "go_memstats_heap_inuse_bytes"))
		time.Sleep(50 * time.Millisecond)
	}
	if tc.outage && !saw503 {
		t.Errorf("%s /readyz never answered 503 in %s of %s", tier, time.Since(faultAt).Round(time.Millisecond), tc.name)
	}
	if tc.usable && saw503 {
		t.Errorf("%s /readyz answered 503 after %s of %s, although NATS still worked", tier, noticed.Round(time.Millisecond), tc.name)
	}

	proxy.Heal()
	healedAt := time.Now()
	testutil.Eventually(t, 30*time.Second, func() error {
		if s := readyStatus(base + "/readyz"); s != 200 {
			return fmt.Errorf("%s /readyz %d after healing", tier, s)
		}
		return nil
	})
	recovered := time.Since(healedAt)
	time.Sleep(300 * time.Millisecond)

	var written int64
	told := map[string]bool{}
	for _, s := range senders {
		reply := s.finish(t)
		written += s.written.Load()
		told[s.name] = s.refused()
		if reply != "" && !strings.HasPrefix(reply, "-ERR") {
			t.Errorf("sender %s: unexpected reply %q", s.name, reply)
		}
	}

	// Watchers: closed ones were told (1012); connected ones have every
	// line of every sender that was not told, in order, without a gap.
	var delivered, silent int64 // silent: lines of untold senders missing at watchers still connected
	closed := map[websocket.StatusCode]int{}
	for i, w := range watchers {
		select {
		case <-w.closed:
			closed[w.status]++
			if w.status != websocket.StatusServiceRestart {
				t.Errorf("watcher %d closed with %d, want 1012", i, w.status)
			}
			delivered += int64(w.count())
			continue
		default:
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			counts, err := gapFreeTold(w.messages(), told)
			if err != nil {
				// A gap never fills: report it and carry on to the figures.
				t.Errorf("watcher %d stayed connected through %s: %v", i, tc.name, err)
				return nil
			}
			for _, s := range senders {
				if got, want := counts[s.name], s.written.Load(); got < want && !told[s.name] {
					return fmt.Errorf("watcher %d has %d of sender %s's %d lines", i, got, s.name, want)
				}
			}
			return nil
		})
		delivered += int64(w.count())
		for _, s := range senders {
			if !told[s.name] {
				silent += s.written.Load() - countOf(w.messages(), s.name)
			}
		}
	}

	// Healed: a new watcher gets a new sender's lines.
	w := dialWatcher(t, "ws://"+fanoutAddr+"/ws/"+channel+"-after")
	testutil.Eventually(t, 20*time.Second, func() error {
		if v := metricSum(scrape("http://"+fanoutAddr+"/metrics"), "relay_fanout_subscriptions"); v < 1 {
			return fmt.Errorf("no subscription yet")
		}
		return nil
	})
	after := startNumberedSender(t, hs, channel+"-after", "after", 300)
	time.Sleep(300 * time.Millisecond)
	if r := after.finish(t); r != "" {
		t.Errorf("sender after healing: reply %q", r)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		counts, err := gapFree(w.messages())
		if err != nil {
			t.Fatalf("watcher after healing: %v", err)
		}
		if counts["after"] < after.written.Load() {
			return fmt.Errorf("watcher after healing has %d of %d", counts["after"], after.written.Load())
		}
		return nil
	})

	// Every client gone: the tier's goroutines return to the baseline.
	for _, w := range append(watchers, w) {
		w.close()
	}
	var goroutines float64
	testutil.Eventually(t, 20*time.Second, func() error {
		goroutines = metricSum(scrape(base+"/metrics"), "go_goroutines")
		if goroutines > baseGoroutines {
			return fmt.Errorf("%s has %v goroutines, %v before the clients came", tier, goroutines, baseGoroutines)
		}
		return nil
	})

	// Memory bounded: what the fault held back is bounded by NATS
	// client buffers and backpressure, far below this.
	const heapBound = 64 << 20
	if maxHeap-baseHeap > heapBound {
		t.Errorf("%s heap grew by %.1f MiB under %s, bound %d MiB", tier, (maxHeap-baseHeap)/(1<<20), tc.name, heapBound>>20)
	}

	// No deadlock: with the fault in place again, SIGTERM ends the tier
	// within its grace period, exit status 0.
	proxy.Add(tc.typ, tc.attrs)
	time.Sleep(300 * time.Millisecond)
	stopAt := time.Now()
	procs[tier].cmd.Process.Signal(syscall.SIGTERM)
	code := procs[tier].wait(t, faultGrace+10*time.Second)
	took := time.Since(stopAt)
	if code != 0 {
		t.Errorf("%s exited %d after SIGTERM under %s", tier, code, tc.name)
	}
	if took > faultGrace+time.Second {
		t.Errorf("%s took %s to stop under %s, grace %s", tier, took.Round(time.Millisecond), tc.name, faultGrace)
	}

	nTold := 0
	for _, v := range told {
		if v {
			nTold++
		}
	}
	noticedText := "never"
	if saw503 {
		noticedText = noticed.Round(time.Millisecond).String()
	}
	t.Logf("%s<->NATS %s: /readyz 503 after %s, 200 again %s after healing; written %d, delivered %d to 2 watchers (closed: %v), missing silently %d, senders told -ERR %d; heap +%.1f MiB; goroutines %v -> %v; SIGTERM under the fault: exit %d in %s",
		tier, tc.name, noticedText, recovered.Round(time.Millisecond), written, delivered, closed, silent, nTold,
		(maxHeap-baseHeap)/(1<<20), baseGoroutines, goroutines, code, took.Round(time.Millisecond))
}

// gapFreeTold is gapFree, except that a sender told -ERR may have a gap:
// it knows it lost lines (at-most-once, but never hidden from both ends).
func gapFreeTold(msgs []string, told map[string]bool) (map[string]int64, error) {
	next := map[string]int64{}
	for _, m := range msgs {
		name, num, ok := strings.Cut(m, " ")
		if !ok || len(num) != seqWidth {
			return next, fmt.Errorf("malformed or cut line %q", m)
		}
		seq, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return next, fmt.Errorf("malformed line %q", m)
		}
		if seq != next[name] && !(told[name] && seq > next[name]) {
			return next, fmt.Errorf("sender %s (told -ERR: %v): got %d after %d: a silent gap of %d", name, told[name], seq, next[name]-1, seq-next[name])
		}
		next[name] = seq + 1
	}
	return next, nil
}

// TestNATSPartitionTellsSenders cuts ingest off NATS (every connection
// through the proxy reset) for longer than RELAY_INGEST_OUTAGE_HOLD while
// 2 senders write: each is told `-ERR upstream unavailable: N messages
// accepted` and closed, and the watchers (their fanout still connected to
// NATS) have that sender's lines 0..N-1 at least, without a gap: N is a
// promise. Lines after N may have arrived too (NATS had them but had not
// confirmed them yet); the sender cannot know, so resending from N gives
// duplicates, never a loss.
func TestNATSPartitionTellsSenders(t *testing.T) {
	t.Parallel()
	ns := testutil.NATSServer(t)
	proxy := toxi.New(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	hs, ingestHTTP, fanoutAddr := freePort(t), freePort(t), freePort(t)
	const hold = time.Second
	startRelay(t, []string{"RELAY_NATS_URL=" + proxy.URL(), "RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP, "RELAY_INGEST_OUTAGE_HOLD=" + hold.String(),
		"RELAY_NATS_PING_INTERVAL=1s", "RELAY_LOG_LEVEL=debug"}, "ingest")
	startRelay(t, []string{"RELAY_NATS_URL=" + ns.ClientURL(), "RELAY_FANOUT_ADDR=" + fanoutAddr, burstQueue}, "fanout")
	waitReady(t, "http://"+ingestHTTP+"/readyz", "http://"+fanoutAddr+"/readyz")

	const channel = "partition"
	var watchers []*testWatcher
	for range 2 {
		watchers = append(watchers, dialWatcher(t, "ws://"+fanoutAddr+"/ws/"+channel))
	}
	waitFanoutConnections(t, "http://"+fanoutAddr+"/metrics", 2)
	var senders []*numberedSender
	for i := range 2 {
		senders = append(senders, startNumberedSender(t, hs, channel, fmt.Sprintf("s%d", i), 300))
	}
	time.Sleep(500 * time.Millisecond)

	proxy.Add(toxi.ResetPeer, map[string]any{"timeout": 0})
	cutAt := time.Now()
	accepted := map[string]int64{}
	for _, s := range senders {
		select {
		case <-s.replied:
		case <-time.After(hold + 20*time.Second):
			t.Fatalf("sender %s not told within %s of the partition", s.name, hold+20*time.Second)
		}
		reply := s.replyText()
		var n int64
		if _, err := fmt.Sscanf(reply, "-ERR upstream unavailable: %d messages accepted", &n); err != nil {
			t.Fatalf("sender %s: reply %q, want -ERR upstream unavailable: N messages accepted", s.name, reply)
		}
		accepted[s.name] = n
	}
	toldAfter := time.Since(cutAt)
	proxy.Heal()

	var written int64
	for _, s := range senders {
		s.finish(t)
		written += s.written.Load()
	}
	delivered := map[string][]int64{}
	for i, w := range watchers {
		// Wait for every accepted line, or until nothing more has arrived
		// for 3 s (the senders are gone: what is missing now stays missing).
		last, lastAt := -1, time.Now()
		testutil.Eventually(t, 30*time.Second, func() error {
			msgs := w.messages()
			counts, err := gapFree(msgs)
			if err != nil {
				t.Errorf("watcher %d: %v", i, err)
				return nil
			}
			if len(msgs) != last {
				last, lastAt = len(msgs), time.Now()
			}
			for name, n := range accepted {
				if counts[name] < n && time.Since(lastAt) < 3*time.Second {
					return fmt.Errorf("watcher %d has %d of sender %s's %d accepted lines", i, counts[name], name, n)
				}
			}
			for name, n := range accepted {
				delivered[name] = append(delivered[name], counts[name])
				if counts[name] < n {
					t.Errorf("watcher %d has %d lines of sender %s, which was told %d were accepted", i, counts[name], name, n)
				}
			}
			return nil
		})
	}
	t.Logf("ingest cut off NATS (hold %s): senders told -ERR after %s with %v accepted; written %d; delivered to the 2 watchers per sender (at least N, beyond N unconfirmed): %v",
		hold, toldAfter.Round(time.Millisecond), accepted, written, delivered)
}
