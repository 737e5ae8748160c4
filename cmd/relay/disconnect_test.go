package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

// TestSenderDisconnectDeliversWhatWasRead: a sender writes its lines and
// goes away without waiting for any answer — once with a normal close (FIN),
// once with a reset (SO_LINGER 0: what a crashed or killed sender's kernel
// sends when it still had unread bytes, e.g. a sender that
// closes without reading +OK). ingest publishes every line it
// had read before it noticed; the watchers get them in order. After a FIN
// that is every line written; after a reset the kernel may have discarded
// what ingest had not read yet: the watchers then hold a gap-free prefix.
func TestSenderDisconnectDeliversWhatWasRead(t *testing.T) {
	t.Parallel()
	hs, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{"RELAY_INGEST_LISTENERS=" + hs + "=*/line", "RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP, burstQueue}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz", "http://"+ingestHTTP+"/readyz")

	const channel, n = "gone", 20000
	var watchers []*wsReceiver
	for range 2 {
		watchers = append(watchers, dialWS(t, "ws://"+httpAddr+"/ws/"+channel))
	}
	waitFanoutConnections(t, "http://"+httpAddr+"/metrics", 2)
	// send writes n numbered lines in one write and closes without reading.
	send := func(name string, reset bool) {
		c, err := net.DialTimeout("tcp", hs, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		// Read +OK first: a socket closed with unread bytes resets instead
		// of closing normally.
		if _, err := io.WriteString(c, channel+"\n"); err != nil {
			t.Fatalf("sender %s: %v", name, err)
		}
		ok := make([]byte, 4)
		if _, err := io.ReadFull(c, ok); err != nil || string(ok) != "+OK\n" {
			t.Fatalf("sender %s: handshake reply %q, %v", name, ok, err)
		}
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%s %0*d\n", name, seqWidth, i)
		}
		if _, err := io.WriteString(c, b.String()); err != nil {
			t.Fatalf("sender %s: %v", name, err)
		}
		if reset {
			c.(*net.TCPConn).SetLinger(0)
		}
		c.Close()
	}
	send("fin", false)
	send("rst", true)
	// Both connections are over on ingest's side; what it read is published
	// before it counts a connection closed, so a line sent after that comes
	// after every line of both at the watchers.
	testutil.Eventually(t, 30*time.Second, func() error {
		m := scrape("http://" + ingestHTTP + "/metrics")
		if v := metricSum(m, "relay_ingest_connections"); v != 0 {
			return fmt.Errorf("ingest has %v connections", v)
		}
		if v := metricSum(m, "relay_ingest_connections_total"); v < 2 {
			return fmt.Errorf("ingest has accepted %v connections", v)
		}
		return nil
	})
	if err := sendRaw(hs, channel, "end 00000000\n"); err != nil {
		t.Fatal(err)
	}
	var got map[string]int64
	for i, w := range watchers {
		testutil.Eventually(t, 30*time.Second, func() error {
			if countOf(w.messages(), "end") == 0 {
				return fmt.Errorf("watcher %d: no end line yet", i)
			}
			return nil
		})
		m, err := gapFree(w.messages())
		if err != nil {
			t.Errorf("watcher %d: %v", i, err)
		}
		if m["fin"] != n {
			t.Errorf("watcher %d: %d of the %d lines of the sender that closed normally", i, m["fin"], n)
		}
		got = m
	}
	t.Logf("relay all, senders writing %d lines (%d KB) at once after +OK and closing without reading on: after a FIN every watcher got %d; after a reset %d (a gap-free prefix; the rest discarded by the kernel unread)",
		n, n*len("fin 00000000\n")/1000, got["fin"], got["rst"])
}
