package ingest

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/natsconn"
	"github.com/relaydev/relay/shared/tcpproto"
	"github.com/relaydev/relay/shared/testutil"
)

// durableStream makes the stream for patterns on srv, as relay does at start.
func durableStream(t testing.TB, srv *server.Server, patterns ...string) (*durable.Stream, jetstream.JetStream) {
	t.Helper()
	stream, err := durable.New("relay", config.Durable{
		DurableChannels: patterns, DurableStream: "RELAY", DurableMaxAge: time.Hour,
		DurableMaxMsgs: 1000000, DurableMaxBytes: 1 << 30, DurableReplicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(testutil.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	return stream, js
}

// ackSession sends the handshake line and data, half-closes, and returns
// every line the server wrote until it closed.
func ackSession(t *testing.T, addr, hs, data string) []string {
	t.Helper()
	c := dial(t, addr)
	go func() {
		io.WriteString(c, hs+"\n"+data)
		c.(*net.TCPConn).CloseWrite()
	}()
	return readAll(t, c)
}

func readAll(t *testing.T, c net.Conn) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading replies: %v (got %q)", err, b)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// checkAcks checks the replies are +OK, then +ACK lines counting up to want.
func checkAcks(t *testing.T, replies []string, want uint64) {
	t.Helper()
	if len(replies) < 2 || replies[0] != tcpproto.OK {
		t.Fatalf("replies %q: want +OK then +ACK lines", replies)
	}
	var last uint64
	for _, l := range replies[1:] {
		r := tcpproto.ParseReply(l)
		if r.Kind != tcpproto.ReplyAck || r.Acked < last {
			t.Fatalf("reply %q after +ACK %d (all: %q)", l, last, replies)
		}
		last = r.Acked
	}
	if last != want {
		t.Fatalf("last +ACK %d, want %d", last, want)
	}
}

// storedOn returns the payloads the stream holds on subject, in order, and
// their Nats-Msg-Ids.
func storedOn(t *testing.T, js jetstream.JetStream, subject string) (data, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RELAY")
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Subjects[subject])
	for len(data) < want {
		batch, err := cons.Fetch(want-len(data), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			data = append(data, string(m.Data()))
			ids = append(ids, m.Headers().Get(jetstream.MsgIDHeader))
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return data, ids
}

func checkNumbered(t *testing.T, got []string, prefix string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("stream holds %d messages, want %d", len(got), n)
	}
	for i, d := range got {
		if want := fmt.Sprintf("%s %d", prefix, i); d != want {
			t.Fatalf("message %d is %q, want %q (lost, duplicated or out of order)", i, d, want)
		}
	}
}

// TestDurableAcksMatchStream: a +ack sender's last +ACK N is what the
// stream holds, in order, each message once with its own Nats-Msg-Id; a
// fixed listener's durable channel is stored too (without +ACK lines);
// +ack on a channel that is not durable is refused, and such a channel
// still travels on core NATS.
func TestDurableAcksMatchStream(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	stream, js := durableStream(t, srv, "d.>")
	h := startIngestWith(t, srv, defaultConfig("127.0.0.1:0=*/line,127.0.0.1:0=d.fixed/line"), stream)

	const n = 3000
	checkAcks(t, ackSession(t, h.addr(0), "d.x +ack", numbered("m", 0, n)), n)
	data, ids := storedOn(t, js, "relay.ch.d.x")
	checkNumbered(t, data, "m", n)
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			t.Fatalf("Nats-Msg-Id %q missing or repeated", id)
		}
		seen[id] = true
	}

	c := dial(t, h.addr(1))
	io.WriteString(c, numbered("f", 0, 10))
	c.(*net.TCPConn).CloseWrite()
	if rest := readAll(t, c); len(rest) != 1 || rest[0] != "" {
		t.Fatalf("fixed listener wrote %q, want nothing (no +ack there)", rest)
	}
	data, _ = storedOn(t, js, "relay.ch.d.fixed")
	checkNumbered(t, data, "f", 10)
	if got := ptestutil.ToFloat64(h.m.Stored); got != n+10 {
		t.Fatalf("relay_ingest_stored_total = %v, want %d", got, n+10)
	}

	replies := ackSession(t, h.addr(0), "plain +ack", "x\n")
	if len(replies) != 1 || !strings.HasPrefix(replies[0], "-ERR +ack needs a durable channel; plain is not durable") {
		t.Fatalf("+ack on a core channel: %q", replies)
	}
	if got := ptestutil.ToFloat64(h.m.Refused.With(reasonAckNotDurable)); got != 1 {
		t.Fatalf("refused{ack_not_durable} = %v", got)
	}
	sub := subscribe(t, srv, "relay.ch.plain")
	if r := ackSession(t, h.addr(0), "plain", "core\n"); len(r) != 1 || r[0] != tcpproto.OK {
		t.Fatalf("core channel replies %q", r)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || string(m.Data) != "core" {
		t.Fatalf("core channel message %v, %v", m, err)
	}
}

// TestDurableRetriedPublishStoredOnce: a message sent again with the
// Nats-Msg-Id ingest gave it is stored once (within the duplicate window),
// while two connections sending the same bytes are stored twice (ids are
// per connection).
func TestDurableRetriedPublishStoredOnce(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	stream, js := durableStream(t, srv, "d.>")
	h := startIngestWith(t, srv, defaultConfig("127.0.0.1:0=*/line"), stream)

	checkAcks(t, ackSession(t, h.addr(0), "d.dup +ack", numbered("m", 0, 100)), 100)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RELAY")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetMsg(ctx, 50)
	if err != nil {
		t.Fatal(err)
	}
	again := &nats.Msg{Subject: raw.Subject, Data: raw.Data, Header: raw.Header}
	ack, err := js.PublishMsg(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || ack.Sequence != 50 {
		t.Fatalf("resent message: ack %+v, want a duplicate of sequence 50", ack)
	}

	checkAcks(t, ackSession(t, h.addr(0), "d.dup +ack", numbered("m", 0, 100)), 100)
	data, _ := storedOn(t, js, "relay.ch.d.dup")
	checkNumbered(t, data[:100], "m", 100)
	checkNumbered(t, data[100:], "m", 100)
}

// TestDurableResendAfterReconnectStoredOnce: NATS restarts (same store)
// while a +ack sender streams; the acks that went with the connection are
// sent again with the same ids once NATS is back, so the stream ends with
// every message exactly once, in order, and the last +ACK counts them all.
func TestDurableResendAfterReconnectStoredOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0", JetStreamDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	stopSrv := func(s *server.Server) { s.Shutdown(); s.WaitForShutdown() }
	defer func() { stopSrv(srv) }()
	stream, _ := durableStream(t, srv, "d.>")
	cfg := defaultConfig("127.0.0.1:0=*/line")
	cfg.OutageHold = time.Minute
	h := startIngestWith(t, srv, cfg, stream, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))

	// Far more than is stored when NATS goes away: ingest always has lines
	// to read, so its window is full of acks in flight at that moment.
	const n = 60000
	c := dial(t, h.addr(0))
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, "d.r +ack\n"+numbered("m", 0, n))
		c.(*net.TCPConn).CloseWrite()
		written <- err
	}()
	// A graceful server shutdown sometimes answers every message it has
	// read before it closes, leaving no ack to lose: restart NATS (up to 5
	// times, a few thousand messages apart) until a resend has happened.
	for restart := 0; restart < 5 && ptestutil.ToFloat64(h.m.StoreRetries) == 0; restart++ {
		next := ptestutil.ToFloat64(h.m.Stored) + 2000
		testutil.Eventually(t, 60*time.Second, func() error {
			if got, pending := ptestutil.ToFloat64(h.m.Stored), ptestutil.ToFloat64(h.m.AcksPending); got < next || pending == 0 {
				return fmt.Errorf("%v stored, %v acks pending", got, pending)
			}
			return nil
		})
		stopSrv(srv)
		srv, err = natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: fmt.Sprintf("127.0.0.1:%d", port), JetStreamDir: dir})
		if err != nil {
			t.Fatal(err)
		}
	}
	checkAcks(t, readAll(t, c), n)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(testutil.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := storedOn(t, js, "relay.ch.d.r")
	checkNumbered(t, data, "m", n)
	if got := ptestutil.ToFloat64(h.m.StoreRetries); got == 0 {
		t.Fatal("no durable publish was sent again: the reconnect did not exercise the resend path")
	}
	t.Logf("stored %d once each; %v publishes sent again", n, ptestutil.ToFloat64(h.m.StoreRetries))
}

// TestDurableStoreFailed: when the stream will not take a message (it was
// deleted; it is full and discards new messages) the sender gets
// `-ERR store failed: N messages stored` after the retries, with N what the
// stream holds, and is closed; a quiet sender learns at once.
func TestDurableStoreFailed(t *testing.T) {
	t.Parallel()
	t.Run("stream deleted", func(t *testing.T) {
		t.Parallel()
		srv := testutil.JetStreamServer(t)
		stream, js := durableStream(t, srv, "d.>")
		h := startIngestWith(t, srv, defaultConfig("127.0.0.1:0=*/line"), stream)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, "RELAY"); err != nil {
			t.Fatal(err)
		}
		c := dial(t, h.addr(0))
		io.WriteString(c, "d.gone +ack\none\n") // and stays open, quiet
		replies := readAll(t, c)
		if replies[0] != tcpproto.OK || replies[len(replies)-1] != "-ERR store failed: 0 messages stored" {
			t.Fatalf("replies %q", replies)
		}
		if got := ptestutil.ToFloat64(h.m.Refused.With(reasonStoreFailed)); got != 1 {
			t.Fatalf("refused{store_failed} = %v", got)
		}
	})
	t.Run("full, discard new", func(t *testing.T) {
		t.Parallel()
		srv := testutil.JetStreamServer(t)
		stream, js := durableStream(t, srv, "d.>")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, "RELAY")
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.Discard, cfg.MaxMsgs = jetstream.DiscardNew, 10
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		h := startIngestWith(t, srv, defaultConfig("127.0.0.1:0=*/line"), stream)
		replies := ackSession(t, h.addr(0), "d.full +ack", numbered("m", 0, 20))
		if last := replies[len(replies)-1]; last != "-ERR store failed: 10 messages stored" {
			t.Fatalf("replies %q", replies)
		}
		checkAcks(t, replies[:len(replies)-1], 10)
		data, _ := storedOn(t, js, "relay.ch.d.full")
		checkNumbered(t, data, "m", 10)
		if got := ptestutil.ToFloat64(h.m.StoreRetries); got == 0 {
			t.Fatal("store failed without retries")
		}
	})
}

// TestDurableSessionResendStoredOnce: a sender that names a session
// (`+ack SESSION FIRST`) and sends the same window again on a new
// connection — from FIRST 1 twice, then from the middle — has each message
// stored once, under Nats-Msg-Id CHANNEL:SESSION:n; the same session on
// another channel is a different sender and is stored in full.
func TestDurableSessionResendStoredOnce(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	stream, js := durableStream(t, srv, "d.>")
	h := startIngestWith(t, srv, defaultConfig("127.0.0.1:0=*/line"), stream)

	// Messages are numbered from 1 in the session, "m 0" is message 1.
	checkAcks(t, ackSession(t, h.addr(0), "d.s +ack sess-0001 1", numbered("m", 0, 100)), 100)
	checkAcks(t, ackSession(t, h.addr(0), "d.s +ack sess-0001 1", numbered("m", 0, 100)), 100)
	checkAcks(t, ackSession(t, h.addr(0), "d.s +ack sess-0001 51", numbered("m", 50, 100)), 100)
	data, ids := storedOn(t, js, "relay.ch.d.s")
	checkNumbered(t, data, "m", 150)
	for i, id := range ids {
		if want := tcpproto.SessionMsgID("d.s", "sess-0001", uint64(i+1)); id != want {
			t.Fatalf("message %d has Nats-Msg-Id %q, want %q", i, id, want)
		}
	}
	if got := ptestutil.ToFloat64(h.m.Stored); got != 300 {
		t.Fatalf("relay_ingest_stored_total = %v, want 300 (a duplicate is acknowledged as stored)", got)
	}

	checkAcks(t, ackSession(t, h.addr(0), "d.other +ack sess-0001 1", numbered("m", 0, 100)), 100)
	data, _ = storedOn(t, js, "relay.ch.d.other")
	checkNumbered(t, data, "m", 100)

	for _, bad := range []string{"d.s +ack sess-0001 0", "d.s +ack short 1", "d.s +ack sess-0001", "d.s sess-0001 1"} {
		if r := ackSession(t, h.addr(0), bad, "x\n"); len(r) != 1 || !strings.HasPrefix(r[0], "-ERR bad handshake") {
			t.Fatalf("%q: replies %q, want -ERR bad handshake", bad, r)
		}
	}
}

// TestDurableInFlightBound: with RELAY_INGEST_DURABLE_IN_FLIGHT below what
// the senders' windows could hold, the process never has more publishes
// awaiting their ack than the bound (a full window stops reading, as TCP
// backpressure), and every sender still ends with every message stored.
// (relay_ingest_acks_pending may read higher: it falls only when a
// connection's storer has taken the ack, in order.)
func TestDurableInFlightBound(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	stream, js := durableStream(t, srv, "d.>")
	cfg := defaultConfig("127.0.0.1:0=*/line")
	cfg.DurableInFlight = 300 // each connection's own window is 256: four of them overrun it
	h := startIngestWith(t, srv, cfg, stream)

	stop := make(chan struct{})
	peak := make(chan float64, 1)
	go func() {
		var m float64
		defer func() { peak <- m }()
		for {
			m = max(m, float64(h.ing.js.PublishAsyncPending()))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	const senders, n = 4, 3000
	replies := make(chan []string, senders)
	for i := range senders {
		go func() { replies <- ackSession(t, h.addr(0), fmt.Sprintf("d.b%d +ack", i), numbered("m", 0, n)) }()
	}
	for range senders {
		checkAcks(t, <-replies, n)
	}
	close(stop)
	if p := <-peak; p > 300 {
		t.Fatalf("publishes awaiting an ack peaked at %v, over the bound 300", p)
	} else {
		t.Logf("publishes awaiting an ack peaked at %v of 300; %v publishes held and retried", p, ptestutil.ToFloat64(h.m.PublishRetries))
	}
	for i := range senders {
		data, _ := storedOn(t, js, fmt.Sprintf("relay.ch.d.b%d", i))
		checkNumbered(t, data, "m", n)
	}
}
