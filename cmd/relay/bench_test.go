package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// Short runs only: these check the wiring and the report, never speed.
var benchShort = []string{"--json", "--quiet", "--receivers", "4", "--channels", "2", "--senders", "2",
	"--duration", "300ms", "--warmup", "100ms"}

func TestBenchInProcess(t *testing.T) {
	var out, errb bytes.Buffer
	args := append([]string{"bench", "--with-ceiling", "--nats-baseline"}, benchShort...)
	if code := run(args, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if len(rep.Runs) != 3 || rep.Runs[0].Mode != "ceiling" || rep.Runs[1].Mode != "relay" || rep.Runs[2].Mode != "nats" {
		t.Fatalf("runs %+v", rep.Runs)
	}
	relay := rep.Runs[1]
	if relay.Deliveries == 0 || relay.Lost != 0 || relay.Latency.Count == 0 || relay.Server == nil || relay.NATSInPerSec == 0 {
		t.Fatalf("relay run %+v", relay)
	}
	if rep.RatioToCeiling <= 0 || rep.RatioToNATS <= 0 || rep.Machine.CPUs == 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBenchSpawnIdle(t *testing.T) {
	cmd := exec.Command(relayBin, "bench", "--spawn", "--idle", "--json", "--receivers", "20", "--duration", "100ms")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	idle := rep.Runs[0].Idle
	if idle == nil || idle.Connected != 20 || !strings.Contains(idle.Measured, "pid") || idle.GoroutinesPer <= 0 {
		t.Fatalf("idle report %+v", idle)
	}
}

func TestBenchBadFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "--size", "3", "--slow", "1.5"}, nil, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "size 3") || !strings.Contains(errb.String(), "slow 1.5") {
		t.Fatalf("stderr: %s", errb.String())
	}
}
