package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/testutil"
)

// burstQueue lets a receiver fall behind by a whole test burst. The test
// senders write flat out, so thousands of messages can arrive before a
// receiver's writer is scheduled on a busy 2-core machine; with the default
// queue of 1024 that is (correctly) a slow consumer, which fanout's own tests
// cover. Here the subject is delivery and order.
const burstQueue = "RELAY_FANOUT_CLIENT_QUEUE=65536"

// TestEndToEndAll runs the built binary as `relay all`: `relay send` and raw
// TCP clients write into the fixed and the handshake listener; `relay watch`
// and a WebSocket client receive every line in per-sender order; on SIGTERM
// receivers see 1001 and the process exits 0 within the grace period.
func TestEndToEndAll(t *testing.T) {
	t.Parallel()
	fixed, hs, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t), freePort(t)
	const grace = 5 * time.Second
	p := startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line," + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_SHUTDOWN_GRACE=" + grace.String(),
		"RELAY_LOG_LEVEL=debug",
		burstQueue,
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")

	ws := dialWS(t, "ws://"+httpAddr+"/ws/default")
	watchOut := &syncBuffer{}
	watchErr := &syncBuffer{}
	watchCmd := exec.Command(relayBin, "watch", "ws://"+httpAddr+"/ws/default")
	watchCmd.Stdout, watchCmd.Stderr = watchOut, watchErr
	if err := watchCmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	go func() { watchDone <- watchCmd.Wait() }()
	t.Cleanup(func() { watchCmd.Process.Kill() })
	// relay watch's subscription is in place once the fanout counts two clients.
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(metricsText(t, "http://"+httpAddr+"/metrics"), "relay_fanout_connections 2") {
			return fmt.Errorf("waiting for 2 WebSocket clients")
		}
		return nil
	})

	const n = 500
	senders := map[string]int{"send-fixed": n, "raw-fixed": n, "send-hs": n, "raw-hs": n}
	var wg sync.WaitGroup
	for _, send := range []func() error{
		func() error { return relaySend(fixed, "", lines("send-fixed", n)) },
		func() error { return sendRaw(fixed, "", lines("raw-fixed", n)) },
		func() error { return relaySend(hs, "default", lines("send-hs", n)) },
		func() error { return sendRaw(hs, "default", lines("raw-hs", n)) },
	} {
		wg.Go(func() {
			if err := send(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	total := 4 * n
	testutil.Eventually(t, 30*time.Second, func() error {
		if got, gotWatch := ws.count(), strings.Count(watchOut.String(), "\n"); got < total || gotWatch < total {
			return fmt.Errorf("websocket client has %d, relay watch %d of %d", got, gotWatch, total)
		}
		return nil
	})
	if err := checkOrder(ws.messages(), senders); err != nil {
		t.Fatalf("websocket client: %v", err)
	}
	// Text lines travel through NATS without a Relay-Format header (unless
	// RELAY_INGEST_TEXT_HEADER): fanout must still send them as text.
	if b := ws.binaryCount(); b != 0 {
		t.Fatalf("websocket client got %d of %d lines as binary frames, want text", b, total)
	}
	if err := checkOrder(strings.Split(strings.TrimSuffix(watchOut.String(), "\n"), "\n"), senders); err != nil {
		t.Fatalf("relay watch: %v", err)
	}
	t.Logf("relay all: sent %d, websocket client received %d, relay watch received %d, lost 0", total, ws.count(), total)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 3*grace); code != 0 {
		t.Fatalf("relay all exited %d after SIGTERM\n%s", code, p.stderr.String())
	}
	took := time.Since(start)
	if took > grace {
		t.Errorf("shutdown took %s, grace is %s", took, grace)
	}
	select {
	case <-ws.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("websocket client not closed at shutdown")
	}
	if ws.status != websocket.StatusGoingAway {
		t.Errorf("websocket client close status %d, want 1001", ws.status)
	}
	select {
	case err := <-watchDone:
		if err != nil {
			t.Errorf("relay watch exited with %v: %s", err, watchErr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay watch did not exit after the server shut down")
	}
	if !strings.Contains(watchErr.String(), "1001") {
		t.Errorf("relay watch did not report 1001: %q", watchErr.String())
	}
	t.Logf("SIGTERM to exit 0: %s (grace %s)", took.Round(time.Millisecond), grace)
}

// TestSplitTiers runs one NATS server, two `relay ingest` and two `relay
// fanout` processes: every receiver on either fanout gets every message
// from senders on either ingest.
func TestSplitTiers(t *testing.T) {
	t.Parallel()
	srv := testutil.NATSServer(t)
	natsURL := "RELAY_NATS_URL=" + srv.ClientURL()

	var ingestAddrs, fanoutAddrs []string
	var ready []string
	for range 2 {
		hs, h := freePort(t), freePort(t)
		startRelay(t, []string{natsURL, "RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_INGEST_HTTP_ADDR=" + h}, "ingest")
		ingestAddrs = append(ingestAddrs, hs)
		ready = append(ready, "http://"+h+"/readyz")

		f := freePort(t)
		startRelay(t, []string{natsURL, "RELAY_FANOUT_ADDR=" + f, burstQueue}, "fanout")
		fanoutAddrs = append(fanoutAddrs, f)
		ready = append(ready, "http://"+f+"/readyz")
	}
	waitReady(t, ready...)

	var receivers []*wsReceiver
	for _, f := range fanoutAddrs {
		for range 2 {
			receivers = append(receivers, dialWS(t, "ws://"+f+"/ws/split"))
		}
	}
	const n = 1000
	senders := map[string]int{}
	var wg sync.WaitGroup
	for i, addr := range ingestAddrs {
		for j := range 2 {
			name := fmt.Sprintf("ingest%d-sender%d", i, j)
			senders[name] = n
			wg.Go(func() {
				if err := sendRaw(addr, "split", lines(name, n)); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	total := len(senders) * n
	for i, r := range receivers {
		testutil.Eventually(t, 30*time.Second, func() error {
			if got := r.count(); got < total {
				return fmt.Errorf("receiver %d has %d of %d", i, got, total)
			}
			return nil
		})
		if err := checkOrder(r.messages(), senders); err != nil {
			t.Fatalf("receiver %d: %v", i, err)
		}
	}
	t.Logf("split tiers: 2 ingest, 2 fanout, %d senders sent %d; each of %d receivers received %d; lost 0",
		len(senders), total, len(receivers), total)
}

func TestBadConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(relayBin, "all")
	cmd.Env = append(cmd.Environ(), "RELAY_INGEST_MAX_MESSAGE=big", "RELAY_LOG_LEVEL=loud",
		"RELAY_INGEST_LISTENERS=:7070=bad channel/line", "RELAY_FANOUT_CLIENT_QUEUE=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit %d (%v), want 2; stderr:\n%s", code, err, stderr.String())
	}
	for _, want := range []string{"RELAY_INGEST_MAX_MESSAGE", "RELAY_LOG_LEVEL", "RELAY_INGEST_LISTENERS", "RELAY_FANOUT_CLIENT_QUEUE"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not mention %s:\n%s", want, stderr.String())
		}
	}
}

func TestFailedStartExitsNonZero(t *testing.T) {
	t.Parallel()
	t.Run("nats unreachable", func(t *testing.T) {
		t.Parallel()
		cmd := exec.Command(relayBin, "ingest")
		cmd.Env = append(cmd.Environ(), "RELAY_NATS_URL=nats://127.0.0.1:1", "RELAY_NATS_RETRY_WINDOW=1s",
			"RELAY_INGEST_LISTENERS=127.0.0.1:0=d/line", "RELAY_INGEST_HTTP_ADDR=127.0.0.1:0")
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "NATS unreachable") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
	t.Run("port in use", func(t *testing.T) {
		t.Parallel()
		busy := freePort(t)
		p := startRelay(t, []string{"RELAY_FANOUT_ADDR=" + busy, "RELAY_INGEST_LISTENERS=127.0.0.1:0=d/line", "RELAY_INGEST_HTTP_ADDR=127.0.0.1:0"}, "all")
		waitReady(t, "http://"+busy+"/readyz")
		cmd := exec.Command(relayBin, "all")
		cmd.Env = append(cmd.Environ(), "RELAY_FANOUT_ADDR="+busy, "RELAY_INGEST_LISTENERS=127.0.0.1:0=d/line", "RELAY_INGEST_HTTP_ADDR=127.0.0.1:0")
		out, _ := cmd.CombinedOutput()
		last := strings.TrimSpace(string(out))
		last = last[strings.LastIndex(last, "\n")+1:]
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(last, "address already in use") {
			t.Fatalf("exit %d, last line %q", code, last)
		}
		_ = p
	})
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	body, err := httpGet(url)
	if err != nil {
		return err.Error()
	}
	return body
}
