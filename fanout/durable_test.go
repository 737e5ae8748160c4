package fanout

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/natsconn"
	rtest "github.com/relaydev/relay/shared/testutil"
)

// The durable tests do not run in parallel with the others: their
// JetStream file stores open and close files all along, and
// TestSlowlorisFanout counts the process's file descriptors. (Go runs every
// sequential test before the parallel ones start.)

// durEnv is a fanout Server whose channels matching dur.> are durable,
// against an embedded NATS server with JetStream.
type durEnv struct {
	*env
	js jetstream.JetStream
}

// startDurable starts the stream (maxMsgs per channel; 0 = no limit) and a
// Server with a ring of ringSize, then edit (may be nil).
func startDurable(t testing.TB, ringSize int, maxMsgs int64, edit func(*Options)) *durEnv {
	t.Helper()
	ns := rtest.JetStreamServer(t)
	stream, err := durable.New("relay", config.Durable{
		DurableChannels: []string{"dur.>"}, DurableStream: "RELAY", DurableMaxAge: time.Hour,
		DurableMaxMsgs: maxMsgs, DurableMaxBytes: 1 << 30, DurableReplicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(rtest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	e := startEnvOn(t, ns, func(o *Options) {
		o.Durable, o.DurableRing = stream, ringSize
		if edit != nil {
			edit(o)
		}
	})
	return &durEnv{env: e, js: js}
}

// store publishes n messages "<prefix>i" (i from 1) to channel with acks
// and returns their stream sequences.
func (e *durEnv) store(channel, prefix string, from, n int) []uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seqs := make([]uint64, 0, n)
	for i := from; i < from+n; i++ {
		ack, err := e.js.Publish(ctx, "relay.ch."+channel, []byte(prefix+strconv.Itoa(i)))
		if err != nil {
			e.t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

func (e *durEnv) dialQuery(channel, query string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := e.wsURL + "/ws/" + channel
	if query != "" {
		u += "?" + query
	}
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(4 << 20)
	e.t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

// expect reads messages prefix+from .. prefix+to, in order.
func expect(t *testing.T, c *websocket.Conn, prefix string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		_, b := read(t, c, 30*time.Second)
		if want := prefix + strconv.Itoa(i); string(b) != want {
			t.Fatalf("got %q, want %q (expecting %s%d..%s%d)", b, want, prefix, from, prefix, to)
		}
	}
}

// expectNext stores marker and checks it is the next message c gets.
func (e *durEnv) expectNext(t *testing.T, c *websocket.Conn, channel, marker string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.js.Publish(ctx, "relay.ch."+channel, []byte(marker)); err != nil {
		t.Fatal(err)
	}
	_, b := read(t, c, 30*time.Second)
	if string(b) != marker {
		t.Fatalf("got %q, want the marker %q: a duplicate or a message out of place", b, marker)
	}
}

// jsAPIRequests is how many JetStream API requests the server has served.
func jsAPIRequests(t *testing.T, e *durEnv) uint64 {
	t.Helper()
	v, err := e.ns.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v.JetStream.Stats.API.Total
}

// TestDurableResume: ?since= within the ring replays what followed from
// memory (no JetStream request), ?since= before the ring reads the stream,
// ?last= and ?since_time= start where they say; each then continues live
// with no gap and no duplicate.
func TestDurableResume(t *testing.T) {
	e := startDurable(t, 8, 0, nil)
	live := e.dial("dur.a", nil) // the channel exists from here: its ring fills
	seqs := e.store("dur.a", "m", 1, 20)
	expect(t, live, "m", 1, 20)
	// Every resume below ends with the next live message, n<k>, right
	// after the replay: nothing missed at the handoff, nothing twice.
	next := 0
	handoff := func(t *testing.T, c *websocket.Conn) {
		t.Helper()
		next++
		e.store("dur.a", "n", next, 1)
		expect(t, live, "n", next, next)
		if _, b := read(t, c, 30*time.Second); string(b) != "n"+strconv.Itoa(next) {
			t.Fatalf("after the replay got %q, want the live n%d", b, next)
		}
	}

	t.Run("since within the ring", func(t *testing.T) {
		before := jsAPIRequests(t, e)
		c, err := e.dialQuery("dur.a", "since="+strconv.FormatUint(seqs[15], 10)) // after m16
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "m", 17, 20)
		if after := jsAPIRequests(t, e); after != before {
			t.Errorf("a resume within the ring made %d JetStream API requests, want 0", after-before)
		}
		handoff(t, c)
	})
	t.Run("since before the ring", func(t *testing.T) {
		c, err := e.dialQuery("dur.a", "since="+strconv.FormatUint(seqs[1], 10)) // after m2
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "m", 3, 20)
		expect(t, c, "n", 1, next)
		handoff(t, c)
	})
	t.Run("since 0 is everything stored", func(t *testing.T) {
		c, err := e.dialQuery("dur.a", "since=0")
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "m", 1, 20)
		expect(t, c, "n", 1, next)
		handoff(t, c)
	})
	t.Run("last within the ring", func(t *testing.T) {
		c, err := e.dialQuery("dur.a", "last=2")
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "n", next-1, next)
		handoff(t, c)
	})
	t.Run("last beyond the ring", func(t *testing.T) {
		c, err := e.dialQuery("dur.a", "last="+strconv.Itoa(10+next))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "m", 11, 20)
		expect(t, c, "n", 1, next)
		handoff(t, c)
	})
	t.Run("last more than stored", func(t *testing.T) {
		c, err := e.dialQuery("dur.a", "last=1000")
		if err != nil {
			t.Fatal(err)
		}
		expect(t, c, "m", 1, 20)
		expect(t, c, "n", 1, next)
		handoff(t, c)
	})
	t.Run("since_time", func(t *testing.T) {
		// The stored time of m5, from the stream itself.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := e.js.Stream(ctx, "RELAY")
		if err != nil {
			t.Fatal(err)
		}
		m5, err := st.GetMsg(ctx, seqs[4])
		if err != nil {
			t.Fatal(err)
		}
		c, err := e.dialQuery("dur.a", "since_time="+url.QueryEscape(m5.Time.Format(time.RFC3339Nano)))
		if err != nil {
			t.Fatal(err)
		}
		// Messages stored in the same instant as m5 may come too; m5 and
		// everything after it must, in order.
		for {
			_, b := read(t, c, 30*time.Second)
			if string(b) == "m5" {
				break
			}
		}
		expect(t, c, "m", 6, 20)
		expect(t, c, "n", 1, next)
		handoff(t, c)
	})
	if got := val(e.m.Replays.With(metrics.ReplayRing)); got < 2 {
		t.Errorf("relay_fanout_replays_total{source=ring} = %v, want at least 2", got)
	}
	if got := val(e.m.Replays.With(metrics.ReplayStream)); got < 3 {
		t.Errorf("relay_fanout_replays_total{source=stream} = %v, want at least 3", got)
	}
}

// TestDurableResumeRefused: bad resume parameters, and a resume on a
// channel that is not durable, complete the upgrade and close with 4400
// and the reason, counted as bad_resume.
func TestDurableResumeRefused(t *testing.T) {
	e := startDurable(t, 8, 0, nil)
	for _, tc := range []struct{ channel, query, reason string }{
		{"dur.a", "since=abc", `bad resume: since="abc": want a stream sequence (0 or more)`},
		{"dur.a", "since=-1", `bad resume: since="-1": want a stream sequence (0 or more)`},
		{"dur.a", "last=x", `bad resume: last="x": want a count from 0 to 1048576`},
		{"dur.a", "since_time=yesterday", `bad resume: since_time="yesterday": want RFC 3339, e.g. 2026-01-02T15:04:05Z`},
		{"dur.a", "since=1&last=2", "bad resume: give only one of since, last and since_time"},
		{"dur.a", "since=1&since=2", "bad resume: since given 2 times"},
		{"live", "since=1", "bad resume: live is not a durable channel (RELAY_DURABLE_CHANNELS): it has no history to resume from"},
	} {
		c, err := e.dialQuery(tc.channel, tc.query)
		if err != nil {
			t.Fatalf("%s?%s: upgrade refused: %v, want 101 then 4400", tc.channel, tc.query, err)
		}
		_, err = readErr(c, 30*time.Second)
		var ce websocket.CloseError
		if !errorsAs(err, &ce) || ce.Code != StatusBadRequest || ce.Reason != tc.reason {
			t.Errorf("%s?%s: %v, want 4400 %q", tc.channel, tc.query, err, tc.reason)
		}
	}
	if got := val(e.m.Refused.With(metrics.FanoutBadResume)); got != 7 {
		t.Errorf("relay_fanout_refused_total{reason=bad_resume} = %v, want 7", got)
	}
}

// TestDurableGap: a resume point the stream no longer holds (the channel's
// limit removed it) closes a plain client with 4410.
func TestDurableGap(t *testing.T) {
	e := startDurable(t, 4, 10, nil)
	seqs := e.store("dur.g", "m", 1, 30) // the stream keeps m21..m30
	c, err := e.dialQuery("dur.g", "since="+strconv.FormatUint(seqs[4], 10))
	if err != nil {
		t.Fatal(err)
	}
	n, err := readErr(c, 30*time.Second)
	var ce websocket.CloseError
	if !errorsAs(err, &ce) || ce.Code != StatusResumeExpired || n != 0 {
		t.Fatalf("resume past retention: %d messages then %v, want none and 4410", n, err)
	}
	if got := val(e.m.Gaps); got != 1 {
		t.Errorf("relay_fanout_gaps_total = %v, want 1", got)
	}
	// A point still stored resumes fine.
	c, err = e.dialQuery("dur.g", "since="+strconv.FormatUint(seqs[24], 10))
	if err != nil {
		t.Fatal(err)
	}
	expect(t, c, "m", 26, 30)
}

// TestDurableSlowReaderCatchesUp: on a durable channel, a client far
// slower than the channel is not cut: it falls out of live delivery,
// catches up from the ring and the stream at its own pace, and ends with
// every message, in order, once each.
func TestDurableSlowReaderCatchesUp(t *testing.T) {
	e := startDurable(t, 64, 0, func(o *Options) {
		o.Config.ClientQueueBytes = 16 << 10 // a small budget: catching up starts early
		o.Config.ClientQueueMaxBytes = 32 << 10
		o.Config.SlowGrace = 200 * time.Millisecond
		// Megabytes wait in the kernel's socket buffers ahead of this slow
		// reader; on a loaded machine one write can wait seconds for room.
		// That is the write timeout's business (a stuck reader is cut with
		// 1011 on any channel), not what this test is about.
		o.Config.WriteTimeout = time.Minute
	})
	slow := e.dial("dur.s", nil)
	// 20 MB, published as fast as the stream takes it: far more than the
	// socket buffers, the client's budget and the ring hold.
	const n = 10000
	payload := string(make([]byte, 2000))
	done := make(chan error, 1)
	go func() {
		err := func() error {
			for i := 1; i <= n; i++ {
				if _, err := e.js.PublishAsync("relay.ch.dur.s", []byte(strconv.Itoa(i)+payload)); err != nil {
					return err
				}
				if i%500 == 0 || i == n { // a window of acks in flight, as ingest keeps
					select {
					case <-e.js.PublishAsyncComplete():
					case <-time.After(120 * time.Second):
						return errors.New("publishes not acknowledged in 120 s")
					}
				}
			}
			return nil
		}()
		if err != nil {
			slow.CloseNow() // end the reader's wait: the test fails with err below
		}
		done <- err
	}()
	defer func() {
		if err := <-done; err != nil {
			t.Fatalf("publisher: %v", err)
		}
	}()
	for i := 1; i <= n; i++ {
		time.Sleep(time.Millisecond) // read far slower than the publisher writes
		_, b := read(t, slow, 60*time.Second)
		if want := strconv.Itoa(i) + payload; string(b) != want {
			t.Fatalf("message %d is %.10q..., want %.10q...", i, b, want)
		}
	}
	if got := val(e.m.SlowConsumers.With(metrics.SlowClient)); got != 0 {
		t.Errorf("slow consumers cut: %v, want 0", got)
	}
	if got := val(e.m.CatchUps); got == 0 {
		t.Errorf("relay_fanout_catchups_total = 0: the reader never fell behind, so this test showed nothing")
	}
	e.expectNext(t, slow, "dur.s", "after")
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// envFrame is an envelope frame as a client decodes it.
type envFrame struct {
	Event   string `json:"event"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Data    string `json:"data"`
}

func (e *durEnv) dialEnvelope(channel, query string) *websocket.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL+"/ws/"+channel+"?"+query, &websocket.DialOptions{Subprotocols: []string{SubprotocolJSON}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.CloseNow() })
	return c
}

func readFrame(t *testing.T, c *websocket.Conn) envFrame {
	t.Helper()
	_, b := read(t, c, 30*time.Second)
	var f envFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %q: %v", b, err)
	}
	return f
}

// TestDurableEnvelope: an envelope client's replay carries each message's
// stream sequence and ends with {"event":"live"}; past retention it is told
// the gap ({"event":"gap","from":A,"to":B}) and goes on with what is stored.
func TestDurableEnvelope(t *testing.T) {
	e := startDurable(t, 4, 10, nil)
	seqs := e.store("dur.e", "m", 1, 30) // the stream keeps m21..m30, the ring none (no watcher yet)

	c := e.dialEnvelope("dur.e", "since="+strconv.FormatUint(seqs[4], 10))
	if f := readFrame(t, c); f.Event != "gap" || f.From != seqs[4]+1 || f.To != seqs[20]-1 {
		t.Fatalf("first frame %+v, want the gap %d..%d", f, seqs[4]+1, seqs[20]-1)
	}
	for i := 21; i <= 30; i++ {
		f := readFrame(t, c)
		if f.Data != "m"+strconv.Itoa(i) || f.Seq != seqs[i-1] || f.Channel != "dur.e" {
			t.Fatalf("frame %+v, want m%d with seq %d on dur.e", f, i, seqs[i-1])
		}
	}
	if f := readFrame(t, c); f.Event != "live" {
		t.Fatalf("after the replay: %+v, want the live event", f)
	}
	next := e.store("dur.e", "n", 1, 1)
	if f := readFrame(t, c); f.Data != "n1" || f.Seq != next[0] {
		t.Fatalf("first live frame %+v, want n1 with seq %d", f, next[0])
	}

	// Within the ring now (the ring holds n1 and what follows).
	more := e.store("dur.e", "o", 1, 3)
	for i := 1; i <= 3; i++ {
		readFrame(t, c)
	}
	r := e.dialEnvelope("dur.e", "since="+strconv.FormatUint(more[0], 10))
	for i := 2; i <= 3; i++ {
		if f := readFrame(t, r); f.Data != "o"+strconv.Itoa(i) || f.Seq != more[i-1] {
			t.Fatalf("ring replay frame %+v, want o%d with seq %d", f, i, more[i-1])
		}
	}
	if f := readFrame(t, r); f.Event != "live" {
		t.Fatalf("after the ring replay: %+v, want the live event", f)
	}
	if got := val(e.m.Gaps); got != 1 {
		t.Errorf("relay_fanout_gaps_total = %v, want 1", got)
	}
}

// TestDurableReplayBeyondQueueBound: a replay far longer than the client's
// queue takes (here its message bound, RELAY_FANOUT_CLIENT_QUEUE) is fed in
// turns as the client drains, from the stream and from the ring: every
// message arrives once, in order.
func TestDurableReplayBeyondQueueBound(t *testing.T) {
	for _, ring := range []int{0, 2000} {
		t.Run("ring="+strconv.Itoa(ring), func(t *testing.T) {
			e := startDurable(t, ring, 0, func(o *Options) { o.Config.ClientQueue = 64 })
			live := e.dial("dur.q", nil)
			seqs := e.store("dur.q", "m", 1, 1000)
			expect(t, live, "m", 1, 1000)
			c, err := e.dialQuery("dur.q", "since="+strconv.FormatUint(seqs[0]-1, 10))
			if err != nil {
				t.Fatal(err)
			}
			expect(t, c, "m", 1, 1000)
			e.expectNext(t, c, "dur.q", "next")
		})
	}
}

// TestDurableClientsSurviveNATSRestart: when NATS goes away and comes back
// (same address, same JetStream store), a core channel's client is closed
// with 1012 (it may have missed messages), but a durable channel's client
// stays: its channel's ordered consumer picks up after the last message it
// delivered, so the client goes on with no gap and no duplicate.
func TestDurableClientsSurviveNATSRestart(t *testing.T) {
	dir := t.TempDir()
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0", JetStreamDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := ns.Addr().String()
	stream, err := durable.New("relay", config.Durable{
		DurableChannels: []string{"dur.>"}, DurableStream: "RELAY", DurableMaxAge: time.Hour,
		DurableMaxBytes: 1 << 30, DurableReplicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	jsFor := func(url string) jetstream.JetStream {
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	js := jsFor(ns.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := stream.Ensure(ctx, js, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	var ns2 *server.Server
	t.Cleanup(func() {
		if ns2 != nil {
			ns2.Shutdown()
			ns2.WaitForShutdown()
		}
	})
	e := &durEnv{env: startEnvOn(t, ns, func(o *Options) { o.Durable, o.DurableRing = stream, 64 }), js: js}
	dur := e.dial("dur.n", nil)
	core := e.dial("core", nil)
	e.store("dur.n", "m", 1, 5)
	expect(t, dur, "m", 1, 5)

	ns.Shutdown()
	ns.WaitForShutdown()
	if _, err := readErr(core, 30*time.Second); websocket.CloseStatus(err) != websocket.StatusServiceRestart {
		t.Fatalf("core channel client: %v, want 1012", err)
	}
	ns2, err = natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: addr, JetStreamDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if !e.nc.IsConnected() {
			return errors.New("fanout not reconnected")
		}
		return nil
	})
	e.js = jsFor(ns2.ClientURL())
	e.store("dur.n", "m", 6, 5)
	expect(t, dur, "m", 6, 10)
	e.expectNext(t, dur, "dur.n", "after")
}
