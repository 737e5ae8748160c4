package loadgen

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/relaydev/relay/fanout"
	"github.com/relaydev/relay/ingest"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/natsconn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStampRoundTrip(t *testing.T) {
	p := newPayload(64)
	for _, v := range []int64{0, 1, 123456789, 1<<62 + 5} {
		stamp(p, v)
		got, err := readStamp(p)
		if err != nil || got != v {
			t.Fatalf("stamp %d: got %d, %v", v, got, err)
		}
	}
	if strings.ContainsAny(string(p), "\n\r") {
		t.Fatal("payload holds a line break")
	}
	if _, err := readStamp([]byte("short")); err == nil {
		t.Fatal("short message accepted")
	}
	if _, err := readStamp([]byte("zzzzzzzzzzzzzzzzzz")); err == nil {
		t.Fatal("non-hex stamp accepted")
	}
}

// TestWSClient checks the minimal receiver against coder/websocket: text and
// binary frames (small and larger than the read buffer), pings answered,
// the close code reported.
func TestWSClient(t *testing.T) {
	pinged := make(chan error, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := c.CloseRead(context.Background())
		c.Write(ctx, websocket.MessageText, []byte("0000000000000001hello"))
		c.Write(ctx, websocket.MessageBinary, []byte(strings.Repeat("0", 16)+strings.Repeat("b", 100000)))
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pinged <- c.Ping(pctx)
		cancel()
		c.Close(websocket.StatusPolicyViolation, "slow consumer")
	}))
	defer hs.Close()
	ws, err := dialWS(strings.TrimPrefix(hs.URL, "http://"), "/ws/x", "", 5*time.Second, 4096, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var sizes []int
	end := ws.readLoop(newClock().now, func(p []byte, _ int64) { sizes = append(sizes, len(p)) })
	var ce CloseError
	if !errors.As(end, &ce) || ce.Code != int(websocket.StatusPolicyViolation) {
		t.Fatalf("end = %v, want close 1008", end)
	}
	if len(sizes) != 2 || sizes[0] != 21 || sizes[1] != 100016 {
		t.Fatalf("message sizes %v", sizes)
	}
	if err := <-pinged; err != nil {
		t.Fatalf("ping not answered: %v", err)
	}
}

func TestValidate(t *testing.T) {
	err := Config{Mode: ModeRelay, Receivers: 1, Size: 3, Slow: 2}.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"fanout address", "senders 0", "size 3", "duration", "slow 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestReadProc(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.CPUSeconds < 0 {
		t.Fatalf("implausible stats %+v", s)
	}
}

func TestCeiling(t *testing.T) {
	res, err := Run(context.Background(), Config{
		Mode: ModeCeiling, Senders: 2, Receivers: 6, Channels: 2, Size: 64, Window: 64,
		Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond, Probe: SelfProbe{},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, res)
}

// stack is ingest + fanout on an embedded NATS server, on loopback.
type stack struct {
	ingestAddr, fanoutAddr, natsURL string
	inMsgs                          func() uint64
}

func startStack(t *testing.T, queue int) stack {
	t.Helper()
	ns, err := natsconn.StartEmbedded(natsconn.EmbeddedOptions{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := metrics.New()
	connect := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	ing, err := ingest.New(ingest.Options{
		Config: config.Ingest{Listeners: config.MustParseListeners("127.0.0.1:0=*/line"), MaxMessage: 65536, HandshakeTimeout: 5 * time.Second,
			MaxConnections: 100, ReadBuffer: 32768},
		SubjectPrefix: "relay", ShutdownGrace: 2 * time.Second, NATS: connect(), Logger: log, Metrics: reg.Ingest,
	})
	if err != nil {
		t.Fatal(err)
	}
	fan, err := fanout.New(fanout.Options{
		Config: config.Fanout{Addr: "127.0.0.1:0", ClientQueue: queue, ClientQueueBytes: 8 << 20,
			ClientQueueMaxBytes: 8 << 20, SlowGrace: time.Second,
			WriteTimeout: 5 * time.Second, MaxConnections: 1000, SubPendingMsgs: 65536, SubPendingBytes: 64 << 20},
		SubjectPrefix: "relay", ShutdownGrace: 2 * time.Second, NATS: connect(), Logger: log, Metrics: reg.Fanout,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { ing.Run(ctx); done <- struct{}{} }()
	go func() { fan.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return stack{
		ingestAddr: ing.Addrs()[0].String(), fanoutAddr: fan.Addr().String(), natsURL: ns.ClientURL(),
		inMsgs: func() uint64 { v, _ := ns.Varz(nil); return uint64(v.InMsgs) },
	}
}

func TestRelayStream(t *testing.T) {
	s := startStack(t, 1024)
	for _, rate := range []float64{0, 2000} {
		res, err := Run(context.Background(), Config{
			Mode: ModeRelay, IngestAddr: s.ingestAddr, FanoutAddr: s.fanoutAddr,
			Senders: 2, Receivers: 6, Channels: 2, Size: 100, Rate: rate, Window: 64,
			Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond,
			Probe: SelfProbe{NATSInMsgs: s.inMsgs},
		})
		if err != nil {
			t.Fatal(err)
		}
		checkStream(t, res)
		if res.NATSInPerSec <= 0 {
			t.Errorf("rate %v: no NATS figure: %+v", rate, res)
		}
	}
}

// TestSlowReceivers: receivers that never read are cut off by relay's
// slow-consumer policy and the reading ones lose nothing.
func TestSlowReceivers(t *testing.T) {
	s := startStack(t, 16)
	res, err := Run(context.Background(), Config{
		Mode: ModeRelay, IngestAddr: s.ingestAddr, FanoutAddr: s.fanoutAddr,
		Senders: 1, Receivers: 4, Size: 4000, Window: 8, Slow: 0.25,
		Warmup: 100 * time.Millisecond, Duration: time.Second, Probe: SelfProbe{},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, res)
	// The close frame may not get through the full window
	// (docs/architecture.md, close codes); the TCP close must, and a close
	// code that does arrive must be 1008.
	if res.SlowReceivers != 1 || res.SlowClosed != 1 {
		t.Fatalf("slow receiver not cut off: %+v", res)
	}
	for code := range res.CloseCodes {
		if code != "1008" {
			t.Fatalf("slow receiver closed with %s, want 1008: %+v", code, res)
		}
	}
}

func TestNATSBaseline(t *testing.T) {
	s := startStack(t, 1024)
	res, err := Run(context.Background(), Config{
		Mode: ModeNATS, NATSURL: s.natsURL, Senders: 2, Size: 64,
		Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond,
		Probe: SelfProbe{NATSInMsgs: s.inMsgs},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OfferedPerSec <= 0 || res.NATSInPerSec <= 0 {
		t.Fatalf("no rate: %+v", res)
	}
}

func TestIdle(t *testing.T) {
	s := startStack(t, 1024)
	res, err := Run(context.Background(), Config{
		Mode: ModeIdle, FanoutAddr: s.fanoutAddr, Receivers: 50, Duration: 100 * time.Millisecond, Probe: SelfProbe{},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Idle == nil || res.Idle.Connected != 50 || res.Idle.GoroutinesPer <= 0 {
		t.Fatalf("idle report %+v", res.Idle)
	}
	var b strings.Builder
	res.WriteText(&b)
	if !strings.Contains(b.String(), "per connection") {
		t.Fatalf("text report: %s", b.String())
	}
}

func checkStream(t *testing.T, res *Result) {
	t.Helper()
	var b strings.Builder
	res.WriteText(&b)
	t.Log(b.String())
	if res.Sent == 0 || res.Deliveries == 0 || res.Latency.Count == 0 {
		t.Fatalf("nothing measured: %+v", res)
	}
	if res.Lost != 0 || res.Disconnected != 0 {
		t.Fatalf("lost %d deliveries, %d disconnected", res.Lost, res.Disconnected)
	}
	if res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
		t.Fatalf("latency %+v", res.Latency)
	}
	if res.Server == nil || res.Server.CPUSeconds < 0 {
		t.Fatalf("server report %+v", res.Server)
	}
}

// probeElsewhere stands for a server in another process (as with --spawn):
// any probe but SelfProbe.
type probeElsewhere struct{ SelfProbe }

// TestLoadGenCPU: with the server measured as another process, the report
// has the load generator's own CPU and the CPU per delivery of both.
func TestLoadGenCPU(t *testing.T) {
	s := startStack(t, 1024)
	res, err := Run(context.Background(), Config{
		Mode: ModeRelay, IngestAddr: s.ingestAddr, FanoutAddr: s.fanoutAddr,
		Senders: 1, Receivers: 4, Size: 100, Window: 64,
		Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond,
		Probe: probeElsewhere{SelfProbe{NATSInMsgs: s.inMsgs}},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, res)
	g := res.LoadGen
	if g == nil || g.CPUSeconds <= 0 || g.MicrosPerDelivery <= 0 || g.ServerMicrosPerDelivery <= 0 {
		t.Fatalf("load generator report %+v", g)
	}
	var b strings.Builder
	res.WriteText(&b)
	if !strings.Contains(b.String(), "load gen    this process: cpu") {
		t.Fatalf("text report has no load generator line:\n%s", b.String())
	}
}
