package ingest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ptestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/tcpproto"
	"github.com/relaydev/relay/shared/testutil"
)

// clusterSender streams numbered lines with +ack until stop is closed (or
// the server closes), then half-closes and reads the replies to the end.
type clusterSender struct {
	name    string
	written int // lines written (the writer's count; may exceed what ingest read)
	ackedN  atomic.Uint64
	acked   uint64 // the last +ACK N
	refusal string // the -ERR reason, if any
	err     error
}

const maxAhead = 4096

func runClusterSender(addr, name string, stop <-chan struct{}) *clusterSender {
	cs := &clusterSender{name: name}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		cs.err = err
		return cs
	}
	defer c.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		w := bufio.NewWriterSize(c, 16<<10)
		w.WriteString(name + " +ack\n")
		for i := 0; ; i++ {
			select {
			case <-stop:
				w.Flush()
				c.(*net.TCPConn).CloseWrite()
				return
			default:
			}
			w.WriteString(name + " " + strconv.Itoa(i) + "\n")
			cs.written = i + 1
			if i%64 == 63 {
				if w.Flush() != nil {
					return
				}
				// At most maxAhead lines beyond the last +ACK: loopback
				// socket buffers hold megabytes, and a sender racing that
				// far ahead would make the test one of draining a backlog.
				for cs.written-int(cs.ackedN.Load()) > maxAhead {
					select {
					case <-stop:
					case <-time.After(time.Millisecond):
						continue
					}
					break
				}
			}
		}
	})
	c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			switch r := tcpproto.ParseReply(line); r.Kind {
			case tcpproto.ReplyAck:
				cs.acked = r.Acked
				cs.ackedN.Store(r.Acked)
			case tcpproto.ReplyErr:
				cs.refusal = r.Reason
			}
		}
		if err != nil {
			if err != io.EOF {
				cs.err = err
			}
			break
		}
	}
	c.Close()
	wg.Wait()
	return cs
}

// TestDurableClusterLeaderKilled is issue 15's cluster test: three routed
// nats-servers with JetStream, the stream at R3, ingest connected to all of
// them, +ack senders streaming; the node leading the stream is shut down
// under load. Afterwards every message a sender was told is stored (its
// last +ACK N, or the N of its -ERR) is in the stream, read back from a
// surviving node; the test reports how many senders were told -ERR and how
// many messages were acknowledged, sent twice, or stored beyond the ack.
func TestDurableClusterLeaderKilled(t *testing.T) {
	t.Parallel()
	nodes := testutil.JetStreamCluster(t, 3)
	stream, err := durable.New("relay", config.Durable{
		DurableChannels: []string{"c.>"}, DurableStream: "RELAY", DurableMaxAge: time.Hour,
		DurableMaxMsgs: 1000000, DurableMaxBytes: 1 << 30, DurableReplicas: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := testutil.Connect(t, nodes[0], testutil.Servers(nodes...), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := stream.Ensure(ctx, js, testutil.Logger(t))
		return err
	})

	cfg := defaultConfig("127.0.0.1:0=*/line")
	cfg.OutageHold = time.Minute
	h := startIngestWith(t, nodes[0], cfg, stream, testutil.Servers(nodes...),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))

	const senders = 4
	stop := make(chan struct{})
	results := make(chan *clusterSender, senders)
	for i := range senders {
		go func() { results <- runClusterSender(h.addr(0), fmt.Sprintf("c.s%d", i), stop) }()
	}
	stopOnce := sync.OnceFunc(func() { close(stop) })
	defer stopOnce()

	stored := func() float64 { return ptestutil.ToFloat64(h.m.Stored) }
	testutil.Eventually(t, 2*time.Minute, func() error {
		if n := stored(); n < 3000 {
			return fmt.Errorf("%v stored before the kill", n)
		}
		return nil
	})
	leader := streamLeader(t, js)
	var victim *server.Server
	for _, s := range nodes {
		if s.Name() == leader {
			victim = s
		}
	}
	if victim == nil {
		t.Fatalf("stream leader %q is none of the nodes", leader)
	}
	before := stored()
	victim.Shutdown()
	victim.WaitForShutdown()
	t.Logf("shut down the stream leader %s with %v messages stored (%v acks pending)", leader, before, ptestutil.ToFloat64(h.m.AcksPending))
	// Storing goes on once a new leader is elected.
	testutil.Eventually(t, 2*time.Minute, func() error {
		if n := stored(); n < before+3000 {
			return fmt.Errorf("%v stored, %v at the kill", n, before)
		}
		return nil
	})
	t.Logf("new stream leader %s", streamLeader(t, js))
	stopOnce()
	stoppedAt := time.Now()

	var got []*clusterSender
	deadline := time.After(3 * time.Minute)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for len(got) < senders {
		select {
		case cs := <-results:
			got = append(got, cs)
		case <-tick.C:
			t.Logf("waiting for senders: %v stored, %v acks pending, %v retries, %v connections", stored(),
				ptestutil.ToFloat64(h.m.AcksPending), ptestutil.ToFloat64(h.m.StoreRetries), ptestutil.ToFloat64(h.m.Connections))
		case <-deadline:
			t.Fatal("a sender did not finish")
		}
	}
	t.Logf("senders finished %s after they stopped writing", time.Since(stoppedAt).Round(100*time.Millisecond))
	var acked, told uint64
	var errs int
	for _, cs := range got {
		if cs.err != nil {
			t.Errorf("%s: %v", cs.name, cs.err)
		}
		n := cs.acked
		if cs.refusal != "" {
			errs++
			// "store failed: N messages stored" / "upstream unavailable: N messages accepted"
			if f := strings.Fields(cs.refusal); len(f) >= 3 {
				if v, err := strconv.ParseUint(f[len(f)-3], 10, 64); err == nil {
					n = max(n, v)
				}
			}
		}
		data, _ := storedOn(t, js, "relay.ch."+cs.name)
		count := map[string]int{}
		for _, d := range data {
			count[d]++
		}
		for i := range n {
			if m := cs.name + " " + strconv.FormatUint(i, 10); count[m] == 0 {
				t.Errorf("%s: message %q was acknowledged (+ACK %d) but is not in the stream", cs.name, m, n)
				break
			}
		}
		dups := 0
		for _, c := range count {
			dups += c - 1
		}
		acked += cs.acked
		told += n
		t.Logf("%s: written %d, last +ACK %d, -ERR %q, stream holds %d (%d duplicates)", cs.name, cs.written, cs.acked, cs.refusal, len(data), dups)
		if dups > 0 {
			t.Errorf("%s: %d messages stored twice", cs.name, dups)
		}
	}
	t.Logf("%d senders: %d told -ERR, %d ended with +ACK only; %d messages acknowledged, 0 of them missing; %v publishes sent again",
		senders, errs, senders-errs, told, ptestutil.ToFloat64(h.m.StoreRetries))
}

// streamLeader names the node leading the RELAY stream's group.
func streamLeader(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	var leader string
	testutil.Eventually(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, "RELAY")
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return fmt.Errorf("no stream leader yet")
		}
		leader = info.Cluster.Leader
		return nil
	})
	return leader
}
