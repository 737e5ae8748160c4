package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/testutil"
)

// TestDurableHistorySurvivesSIGKILL runs the built binary as a user would:
// `relay all` with a durable channel and a data directory, `relay send
// --ack` (exit 0: every line acknowledged as stored), then SIGKILL, then a
// restart on the same directory: the stream still holds every acknowledged
// message, in order, and takes more after them.
func TestDurableHistorySurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hs, httpAddr, ingestHTTP, natsAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	env := []string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_NATS_LISTEN=" + natsAddr,
		"RELAY_DURABLE_CHANNELS=hist.>",
		"RELAY_DATA_DIR=" + dir,
	}
	p := startRelay(t, env, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")
	if !strings.Contains(p.stderr.String(), "created JetStream stream") {
		t.Fatalf("first start did not say it created the stream:\n%s", p.stderr.String())
	}

	if out, err := sendAck(hs, "hist.a", lines("a", 500)); err != nil {
		t.Fatalf("relay send --ack: %v: %s", err, out)
	}
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no flush
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)

	p = startRelay(t, env, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")
	if !strings.Contains(p.stderr.String(), "already as configured") {
		t.Fatalf("restart did not find the stream as configured:\n%s", p.stderr.String())
	}
	if out, err := sendAck(hs, "hist.a", lines("b", 100)); err != nil {
		t.Fatalf("relay send --ack after restart: %v: %s", err, out)
	}

	got := streamMessages(t, "nats://"+natsAddr, "relay.ch.hist.a")
	want := strings.Split(strings.TrimSuffix(lines("a", 500)+lines("b", 100), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("stream holds %d messages after SIGKILL and restart, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q", i, got[i], want[i])
		}
	}
}

// TestSendSessionResendsAcrossSIGKILL: `relay send --ack --session` streams
// numbered messages into `relay all`, which is SIGKILLed mid-stream and
// restarted on the same data directory. relay send reconnects, resends
// from the message after its last +ACK (messages stored but not yet
// acknowledged go twice), and exits 0; the stream holds every message
// exactly once, in order.
func TestSendSessionResendsAcrossSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hs, httpAddr, ingestHTTP, natsAddr := freePort(t), freePort(t), freePort(t), freePort(t)
	env := []string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_NATS_LISTEN=" + natsAddr,
		"RELAY_DURABLE_CHANNELS=hist.>",
		"RELAY_DATA_DIR=" + dir,
		"RELAY_DURABLE_MAX_MSGS_PER_CHANNEL=100000",
	}
	p := startRelay(t, env, "all")
	waitReady(t, "http://"+ingestHTTP+"/readyz")

	const n = 20000
	sender := startRelay(t, nil, "send", "--ack", "--session", "sess-kill-0001", "--retry-for", "2m",
		// 2,000 lines/s: 10 s in all, so the kill comes well before the end.
		"--count", fmt.Sprint(n), "--rate", "2000", "--template", "m {{.N}}", hs, "hist.s")
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := storedCount(t, "nats://"+natsAddr, "relay.ch.hist.s"); got < 3000 {
			return fmt.Errorf("%d stored", got)
		}
		return nil
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	startRelay(t, env, "all") // the same data dir: the stream comes back
	waitReady(t, "http://"+ingestHTTP+"/readyz")

	if code := sender.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("relay send --session exited %d:\n%s", code, sender.stderr.String())
	}
	if !strings.Contains(sender.stderr.String(), "reconnecting") {
		t.Fatalf("relay send did not say it reconnected:\n%s", sender.stderr.String())
	}
	got := streamMessages(t, "nats://"+natsAddr, "relay.ch.hist.s")
	if len(got) != n {
		t.Fatalf("stream holds %d messages, want %d once each", len(got), n)
	}
	for i, m := range got {
		if want := fmt.Sprintf("m %d", i+1); m != want {
			t.Fatalf("message %d is %q, want %q (lost, duplicated or out of order)", i, m, want)
		}
	}
	t.Logf("relay send: %s", strings.TrimSpace(sender.stderr.String()))
}

// storedCount is how many messages the RELAY stream holds on subject; 0
// while the server cannot be reached.
func storedCount(t *testing.T, url, subject string) int {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RELAY")
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0
	}
	return int(info.State.Subjects[subject])
}

// startDurableAll starts `relay all` with one handshake listener, durable
// channels matching pattern (a fresh data directory) and extra variables,
// and waits until both tiers are ready.
func startDurableAll(t *testing.T, pattern string, extra ...string) (hs, httpAddr, ingestHTTP string) {
	t.Helper()
	hs, httpAddr, ingestHTTP = freePort(t), freePort(t), freePort(t)
	startRelay(t, append([]string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_DURABLE_CHANNELS=" + pattern,
		"RELAY_DATA_DIR=" + t.TempDir(),
	}, extra...), "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")
	return hs, httpAddr, ingestHTTP
}

// TestSendAckRefusedOnCoreChannel: --ack on a channel that is not durable
// exits 1 with the server's reason, before any data is sent.
func TestSendAckRefusedOnCoreChannel(t *testing.T) {
	t.Parallel()
	hs, _, _ := startDurableAll(t, "hist.>")
	out, err := sendAck(hs, "live", "x\n")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("relay send --ack on a core channel: %v, want exit 1", err)
	}
	if !strings.Contains(out, "+ack needs a durable channel; live is not durable") {
		t.Fatalf("output %q does not give the reason", out)
	}
}

func sendAck(addr, channel, data string) (string, error) {
	cmd := exec.Command(relayBin, "send", "--ack", addr, channel)
	cmd.Stdin = strings.NewReader(data)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// streamMessages reads every message the RELAY stream holds on subject, in
// stream order, over the JetStream API.
func streamMessages(t *testing.T, url, subject string) []string {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RELAY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Subjects[subject])
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for len(out) < n {
		batch, err := cons.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, string(m.Data()))
		}
		if err := batch.Error(); err != nil {
			t.Fatal(fmt.Errorf("fetch: %w", err))
		}
	}
	return out
}

// TestSendSessionUsage: --session needs --ack and a session of the
// protocol's shape; the error says which.
func TestSendSessionUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "--session", "sess-0001", "127.0.0.1:1", "ch"}, "--session needs --ack"},
		{[]string{"send", "--ack", "--session", "short", "127.0.0.1:1", "ch"}, "a session is 8 to 64 bytes"},
		{[]string{"send", "--ack", "--session", "sess:0001", "127.0.0.1:1", "ch"}, "sessions use A-Z a-z 0-9 _ -"},
		{[]string{"send", "--ack", "--session", "sess-0001", "--retry-for", "0s", "127.0.0.1:1", "ch"}, "--retry-for must be"},
	} {
		var out, errb bytes.Buffer
		if code := run(tt.args, strings.NewReader(""), &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, code, errb.String(), tt.want)
		}
	}
}
