package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/relaydev/relay/loadgen"
)

// TestSoakShort is `relay bench --soak` for 20 s (the 10-minute run is in
// docs/benchmarks.md): senders and watchers come and go every 2 s on
// average against a 'relay all' child process; no watcher misses a line
// silently, nobody is refused, the server's goroutines return to where
// they were once every client has left, and its heap, RSS and goroutines
// do not trend upwards. The bounds are far above noise and far below a
// leak: with ~700 connections a minute, one goroutine leaked per five
// connections would be 140 a minute; 1 KiB kept per message (300 a
// second) would be 17 MiB a minute.
func TestSoakShort(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(relayBin, "bench", "--soak", "20s", "--lifetime", "2s", "--rate", "300",
		"--senders", "4", "--receivers", "20", "--json", "--quiet")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("relay bench --soak: %v\n%s", err, stderr.String())
	}
	var out struct {
		Soak loadgen.SoakResult `json:"soak"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout.String())
	}
	r := out.Soak
	t.Logf("soak 20s: %d senders and %d watchers came and went; written %d, delivered %d, gaps %d; slopes: RSS %+.2f MiB/min, heap %+.2f MiB/min, goroutines %+.1f/min; goroutines %d before, %d after",
		r.SendersOpened, r.WatchersOpened, r.Written, r.Delivered, r.Gaps,
		r.RSSSlopeMiBPerMin, r.HeapSlopeMiBPerMin, r.GoroutineSlopePerMin, r.GoroutinesBefore, r.GoroutinesAfter)
	if r.Gaps != 0 {
		t.Errorf("watchers missed %d lines without being told", r.Gaps)
	}
	if r.SenderErrors != 0 || r.DialErrors != 0 || len(r.WatcherCloses) != 0 {
		t.Errorf("sender errors %d, dial errors %d, watchers closed by the server %v: %v",
			r.SenderErrors, r.DialErrors, r.WatcherCloses, r.FirstErrors)
	}
	if r.SendersOpened < 10 || r.WatchersOpened < 50 || r.Delivered == 0 {
		t.Errorf("too little churn to judge: %d senders, %d watchers, %d delivered", r.SendersOpened, r.WatchersOpened, r.Delivered)
	}
	if r.GoroutinesAfter > r.GoroutinesBefore {
		t.Errorf("server has %d goroutines after every client left, %d before any came", r.GoroutinesAfter, r.GoroutinesBefore)
	}
	if r.GoroutineSlopePerMin > 140 {
		t.Errorf("goroutines grow by %.0f a minute", r.GoroutineSlopePerMin)
	}
	if r.HeapSlopeMiBPerMin > 17 || r.RSSSlopeMiBPerMin > 34 {
		t.Errorf("memory grows: heap %+.1f MiB/min, RSS %+.1f MiB/min", r.HeapSlopeMiBPerMin, r.RSSSlopeMiBPerMin)
	}
}
