package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// TestSendAckRefusedOnCoreChannel: --ack on a channel that is not durable
// exits 1 with the server's reason, before any data is sent.
func TestSendAckRefusedOnCoreChannel(t *testing.T) {
	t.Parallel()
	hs, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + hs + "=*/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
		"RELAY_DURABLE_CHANNELS=hist.>",
		"RELAY_DATA_DIR=" + t.TempDir(),
	}, "all")
	waitReady(t, "http://"+ingestHTTP+"/readyz")
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
