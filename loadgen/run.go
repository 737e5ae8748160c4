// Package loadgen is relay's load generator: S TCP senders and R WebSocket
// receivers against an ingest and a fanout address, the same stream through
// a raw-TCP reference (the ceiling), a bare NATS publisher (the ingest
// baseline), or R idle connections (memory per connection). Every message
// carries its send time, so receivers measure sender-to-receiver latency
// with the process's monotonic clock. `relay bench` is the command line;
// see docs/benchmarks.md.
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tcpproto"
)

// Mode is what a run measures.
type Mode string

// Modes.
const (
	// ModeRelay: senders -> ingest -> NATS -> fanout -> WebSocket receivers.
	ModeRelay Mode = "relay"
	// ModeCeiling: senders -> an in-process raw-TCP fan-out -> plain TCP receivers.
	ModeCeiling Mode = "ceiling"
	// ModeNATS: a bare nats.go publisher (S goroutines on one connection)
	// into the server's NATS, no receivers: the ingest baseline.
	ModeNATS Mode = "nats"
	// ModeIdle: R receivers connect and stay idle; reports the server's
	// memory per connection.
	ModeIdle Mode = "idle"
	// ModeFloor: one message at a time written to R plain TCP receivers
	// in this process from every core: the machine's latency floor.
	ModeFloor Mode = "floor"
	// ModeBurst: R receivers reading as fast as they can, one sender
	// writing an unpaced burst of lines; finds the largest burst every
	// receiver survives (see runBurst).
	ModeBurst Mode = "burst"
)

// InProcess reports whether m measures only this process (the ceiling and
// the floor): no relay server is needed and its CPU is this process's.
func (m Mode) InProcess() bool { return m == ModeCeiling || m == ModeFloor }

// Config describes one run.
type Config struct {
	Mode Mode
	// IngestAddr is an ingest handshake listener (CHANNEL */line), host:port.
	IngestAddr string
	// FanoutAddr is the fanout HTTP address, host:port.
	FanoutAddr string
	// NATSURL is the server's NATS, for ModeNATS.
	NATSURL string
	// NATSHeader makes ModeNATS send a Relay-Format: text header with
	// every message, as ingest does with RELAY_INGEST_TEXT_HEADER=true.
	NATSHeader bool
	// SubjectPrefix is RELAY_SUBJECT_PREFIX (ModeNATS publishes to <prefix>.ch.<channel>). Defaults to relay.
	SubjectPrefix string
	// ChannelPrefix names the channels: <prefix>.0, <prefix>.1, ... Defaults to bench.
	ChannelPrefix string

	Senders   int
	Receivers int
	Channels  int
	// Size is the message size in bytes (at least MinSize), without the newline.
	Size int
	// Rate is the total offered rate in messages per second; 0 is flat out:
	// each channel's senders keep at most Window messages ahead of its
	// slowest reading receiver.
	Rate   float64
	Window int
	// Slow is the fraction of receivers that connect but never read.
	Slow float64

	Warmup   time.Duration
	Duration time.Duration
	// Drain bounds the wait for messages in flight after the senders stop.
	Drain time.Duration

	// Probe observes the server; nil: no server figures.
	Probe Probe
	// Progress receives a line per second while the run goes; nil: quiet.
	Progress io.Writer
	// OnMeasure is called (in its own goroutine) when the measurement
	// window opens, with its length: e.g. to take a CPU profile of it.
	OnMeasure func(d time.Duration)
	// AtPeak, when set, is called at the end of the measurement while every
	// connection is still open: e.g. to take a heap profile.
	AtPeak func()
	// DialTimeout bounds each connection's setup. Defaults to 10s.
	DialTimeout time.Duration
	// DialConcurrency is how many receivers connect at once. Defaults to 64.
	DialConcurrency int

	// ModeBurst: the first burst (lines), the largest tried, and how many
	// bisections narrow the answer after the first failure. Default 1000,
	// 1<<20, 3.
	BurstStart, BurstMax, BurstSteps int
	// SendToken goes into each sender's handshake line and WatchToken into
	// each receiver's Authorization: Bearer header (RELAY_AUTH=jwt); empty:
	// none.
	SendToken, WatchToken string
}

func (c *Config) defaults() {
	if c.Mode == "" {
		c.Mode = ModeRelay
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "relay"
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = "bench"
	}
	if c.Channels < 1 {
		c.Channels = 1
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 64
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if c.BurstStart <= 0 {
		c.BurstStart = 1000
	}
	if c.BurstMax <= 0 {
		c.BurstMax = 1 << 20
	}
	if c.BurstSteps < 0 {
		c.BurstSteps = 0
	} else if c.BurstSteps == 0 {
		c.BurstSteps = 3
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	c.defaults()
	var errs []error
	add := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	switch c.Mode {
	case ModeRelay:
		if c.Senders > 0 && c.IngestAddr == "" {
			add("an ingest address is needed for senders")
		}
		if c.Receivers > 0 && c.FanoutAddr == "" {
			add("a fanout address is needed for receivers")
		}
	case ModeCeiling:
	case ModeFloor:
		if c.Receivers < 1 {
			add("receivers %d: the floor needs at least 1", c.Receivers)
		}
	case ModeNATS:
		if c.NATSURL == "" {
			add("a NATS URL is needed for the NATS baseline")
		}
	case ModeIdle:
		if c.FanoutAddr == "" {
			add("a fanout address is needed for idle connections")
		}
		if c.Receivers < 1 {
			add("receivers %d: idle mode needs at least 1", c.Receivers)
		}
	case ModeBurst:
		if c.IngestAddr == "" || c.FanoutAddr == "" {
			add("burst mode needs an ingest and a fanout address")
		}
		if c.Receivers < 1 {
			add("receivers %d: burst mode needs at least 1", c.Receivers)
		}
		if c.BurstMax < c.BurstStart {
			add("burst max %d: below the first burst %d", c.BurstMax, c.BurstStart)
		}
	default:
		add("mode %q: must be relay, ceiling, floor, nats, idle or burst", c.Mode)
	}
	if c.Mode != ModeIdle && c.Mode != ModeBurst {
		if c.Senders < 1 {
			add("senders %d: must be at least 1", c.Senders)
		}
		if c.Size < MinSize {
			add("size %d: must be at least %d (the timestamp)", c.Size, MinSize)
		}
		if c.Duration <= 0 {
			add("duration %s: must be positive", c.Duration)
		}
	}
	if c.Receivers < 0 || c.Channels < 1 || c.Rate < 0 || c.Window < 0 || c.Warmup < 0 {
		add("receivers, rate, window and warmup must not be negative; channels at least 1")
	}
	if c.Slow < 0 || c.Slow >= 1 {
		add("slow %v: must be a fraction in [0, 1)", c.Slow)
	}
	return errors.Join(errs...)
}

// Result is a run's report; its JSON is `relay bench --json`.
type Result struct {
	Mode          Mode    `json:"mode"`
	Senders       int     `json:"senders"`
	Receivers     int     `json:"receivers"`
	SlowReceivers int     `json:"slow_receivers"`
	Channels      int     `json:"channels"`
	Size          int     `json:"size"`
	TargetRate    float64 `json:"target_rate"` // 0: flat out
	Window        int     `json:"window,omitempty"`
	Seconds       float64 `json:"seconds"` // measurement window

	Sent                uint64  `json:"sent"`
	OfferedPerSec       float64 `json:"offered_msgs_per_sec"`
	DeliveredMsgsPerSec float64 `json:"delivered_msgs_per_sec"`
	Deliveries          uint64  `json:"deliveries"`
	DeliveriesPerSec    float64 `json:"deliveries_per_sec"`
	NATSInPerSec        float64 `json:"nats_in_msgs_per_sec,omitempty"`
	NATSHeader          bool    `json:"nats_header,omitempty"` // ModeNATS: sent the Relay-Format header

	Latency LatencyMS `json:"latency_ms"`

	Expected     uint64         `json:"expected_deliveries"`
	Lost         uint64         `json:"lost_deliveries"`
	LossFraction float64        `json:"loss"`
	Disconnected int            `json:"disconnected"`
	CloseCodes   map[string]int `json:"close_codes,omitempty"`
	SlowClosed   int            `json:"slow_closed,omitempty"` // slow receivers the server cut off

	Server *ServerReport `json:"server,omitempty"`
	// LoadGen is the load generator's own CPU when the server runs in
	// another process: on one host the two share the cores.
	LoadGen *LoadGenReport `json:"load_generator,omitempty"`
	Idle    *IdleReport    `json:"idle,omitempty"`
	Burst   *BurstReport   `json:"burst,omitempty"`
}

// LoadGenReport is the load generator's cost over the measurement window.
type LoadGenReport struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUCores   float64 `json:"cpu_cores"`
	// CPU microseconds per delivery, of the load generator and (when
	// measured) of the server: what one delivery costs the machine.
	MicrosPerDelivery       float64 `json:"cpu_us_per_delivery,omitempty"`
	ServerMicrosPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
}

// ServerReport is the server's cost over the measurement window.
type ServerReport struct {
	Measured          string  `json:"measured"`
	CPUSeconds        float64 `json:"cpu_seconds"`
	CPUCores          float64 `json:"cpu_cores"` // CPU seconds per second
	RSSBytes          int64   `json:"rss_bytes"` // at the end of the window
	SyscW             int64   `json:"write_syscalls"`
	WritesPerDelivery float64 `json:"write_syscalls_per_delivery,omitempty"`
	// SenderWrites are the load generator's own sender writes, subtracted
	// from SyscW when the server is this process.
	SenderWrites int64 `json:"sender_writes,omitempty"`
}

// newServerReport is what the server did between readings a and b of
// probe, secs apart, for the given deliveries; senderWrites are the load
// generator's own writes, when probe measures this process too.
func newServerReport(probe Probe, a, b ServerStats, secs float64, deliveries, senderWrites uint64) *ServerReport {
	sr := &ServerReport{
		Measured:     probe.Describe(),
		CPUSeconds:   b.CPUSeconds - a.CPUSeconds,
		RSSBytes:     b.RSSBytes,
		SyscW:        b.SyscW - a.SyscW,
		SenderWrites: int64(senderWrites),
	}
	if secs > 0 {
		sr.CPUCores = sr.CPUSeconds / secs
	}
	if deliveries > 0 {
		sr.WritesPerDelivery = float64(sr.SyscW-sr.SenderWrites) / float64(deliveries)
	}
	return sr
}

// IdleReport is the server's memory for Receivers idle connections.
type IdleReport struct {
	Measured         string  `json:"measured"`
	Connected        int     `json:"connected"`
	RSSBeforeBytes   int64   `json:"rss_before_bytes"`
	RSSAfterBytes    int64   `json:"rss_after_bytes"`
	RSSPerConnBytes  float64 `json:"rss_per_conn_bytes"`
	HeapPerConnBytes float64 `json:"heap_per_conn_bytes,omitempty"`
	StackPerConn     float64 `json:"stack_per_conn_bytes,omitempty"`
	GoroutinesPer    float64 `json:"goroutines_per_conn,omitempty"`
}

// Run runs one benchmark and returns its report. It is bounded by
// cfg.Warmup + cfg.Duration + cfg.Drain plus connection setup; ctx ends it
// early (the report then covers what ran).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := RaiseFileLimit(); err != nil {
		return nil, fmt.Errorf("loadgen: raise file limit: %w", err)
	}
	switch cfg.Mode {
	case ModeIdle:
		return runIdle(ctx, cfg)
	case ModeNATS:
		return runNATS(ctx, cfg)
	case ModeFloor:
		return runFloor(ctx, cfg)
	case ModeBurst:
		return runBurst(ctx, cfg)
	}
	return runStream(ctx, cfg)
}

// run is the state of one stream run.
type run struct {
	cfg       Config
	clk       clock
	win       window
	lat       *latencies
	chans     []*chanState
	receivers []*receiver
	senders   []*sender
	stop      atomic.Bool
	ceiling   *Ceiling
}

func (r *run) channelName(i int) string { return r.cfg.ChannelPrefix + "." + strconv.Itoa(i) }

func runStream(ctx context.Context, cfg Config) (*Result, error) {
	r := &run{cfg: cfg, clk: newClock(), lat: newLatencies()}
	r.win.from.Store(math.MaxInt64)
	r.win.to.Store(math.MaxInt64)
	for i := range cfg.Channels {
		r.chans = append(r.chans, &chanState{name: r.channelName(i)})
	}
	ingest, fanout := cfg.IngestAddr, cfg.FanoutAddr
	if cfg.Mode == ModeCeiling {
		c, err := StartCeiling()
		if err != nil {
			return nil, err
		}
		defer c.Close()
		r.ceiling = c
		ingest, fanout = c.SenderAddr(), c.ReceiverAddr()
	}
	defer func() {
		for _, rc := range r.receivers {
			rc.close()
		}
		for _, s := range r.senders {
			if s.conn != nil {
				s.conn.Close()
			}
		}
	}()

	// Receivers first, so every message sent reaches all of them.
	nSlow := int(math.Round(cfg.Slow * float64(cfg.Receivers)))
	if err := r.connectReceivers(ctx, fanout, nSlow); err != nil {
		return nil, err
	}
	var readers sync.WaitGroup
	for _, rc := range r.receivers {
		if !rc.slow {
			readers.Go(func() { rc.run(r.clk, &r.win, r.lat) })
		}
	}
	for i := range cfg.Senders {
		ch := r.chans[i%len(r.chans)]
		conn, err := dialSender(ingest, ch.name, cfg.SendToken, cfg.DialTimeout)
		if err != nil {
			return nil, fmt.Errorf("loadgen: sender %d: %w", i, err)
		}
		r.senders = append(r.senders, &sender{id: i, ch: ch, conn: conn})
	}

	p := pace{window: cfg.Window}
	if cfg.Rate > 0 {
		p = pace{interval: int64(float64(cfg.Senders) * 1e9 / cfg.Rate)}
	}
	var senders sync.WaitGroup
	for i, s := range r.senders {
		phase := int64(0)
		if p.interval > 0 {
			phase = p.interval * int64(i) / int64(len(r.senders))
		}
		senders.Go(func() { s.run(r.clk, cfg.Size, p, &r.stop, phase) })
	}

	res := &Result{
		Mode: cfg.Mode, Senders: cfg.Senders, Receivers: cfg.Receivers, SlowReceivers: nSlow,
		Channels: cfg.Channels, Size: cfg.Size, TargetRate: cfg.Rate,
	}
	if cfg.Rate == 0 {
		res.Window = cfg.Window
	}

	// Warm up, then measure.
	prog := r.progress(ctx)
	if !sleepCtx(ctx, cfg.Warmup) {
		cfg.Duration = 0
	}
	a := r.snapshot()
	r.win.from.Store(r.clk.now())
	if cfg.OnMeasure != nil && cfg.Duration > 0 {
		go cfg.OnMeasure(cfg.Duration)
	}
	sleepCtx(ctx, cfg.Duration)
	r.win.to.Store(r.clk.now())
	b := r.snapshot()
	prog()
	if cfg.AtPeak != nil {
		cfg.AtPeak()
	}

	// Stop the senders; what they wrote still travels.
	r.stop.Store(true)
	senders.Wait()
	for _, s := range r.senders {
		if tc, ok := s.conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	r.drain(ctx)

	secs := b.at.Sub(a.at).Seconds()
	res.Seconds = secs
	res.Sent = b.sent - a.sent
	res.Deliveries = b.delivered - a.delivered
	if secs > 0 {
		res.OfferedPerSec = float64(res.Sent) / secs
		res.DeliveriesPerSec = float64(res.Deliveries) / secs
		res.DeliveredMsgsPerSec = (b.perChannel - a.perChannel) / secs
		if b.server.NATSInMsgs > 0 {
			res.NATSInPerSec = float64(b.server.NATSInMsgs-a.server.NATSInMsgs) / secs
		}
	}
	if cfg.Probe != nil && b.serverOK && a.serverOK {
		var senderWrites uint64
		if _, self := cfg.Probe.(SelfProbe); self {
			senderWrites = b.senderWrites - a.senderWrites
		}
		res.Server = newServerReport(cfg.Probe, a.server, b.server, secs, res.Deliveries, senderWrites)
	}
	if _, self := cfg.Probe.(SelfProbe); !self && a.selfOK && b.selfOK && secs > 0 {
		lg := &LoadGenReport{CPUSeconds: b.self.CPUSeconds - a.self.CPUSeconds}
		lg.CPUCores = lg.CPUSeconds / secs
		if res.Deliveries > 0 {
			lg.MicrosPerDelivery = 1e6 * lg.CPUSeconds / float64(res.Deliveries)
			if res.Server != nil {
				lg.ServerMicrosPerDelivery = 1e6 * res.Server.CPUSeconds / float64(res.Deliveries)
			}
		}
		res.LoadGen = lg
	}

	// Loss: every reading receiver should have every message of its
	// channel (all were connected before the first was sent).
	for _, rc := range r.receivers {
		if rc.slow {
			continue
		}
		want := rc.ch.sent.Load()
		got := rc.recv.Load()
		res.Expected += want
		if got < want {
			res.Lost += want - got
		}
	}
	if res.Expected > 0 {
		res.LossFraction = float64(res.Lost) / float64(res.Expected)
	}

	// Close the connections: the readers return; then learn how the slow
	// ones were treated.
	var slowWG sync.WaitGroup
	for _, rc := range r.receivers {
		if rc.slow {
			slowWG.Go(func() { rc.drainSlow(r.clk, 2*time.Second) })
		}
	}
	slowWG.Wait()
	for _, rc := range r.receivers {
		if !rc.slow && !rc.dead.Load() {
			rc.close()
		}
	}
	readers.Wait()
	for _, rc := range r.receivers {
		code := rc.closeCode()
		if rc.slow {
			if code != 0 || (rc.end != nil && !isTimeout(rc.end)) {
				res.SlowClosed++
			}
			if code != 0 {
				addCode(res, code)
			}
			continue
		}
		if code != 0 {
			res.Disconnected++
			addCode(res, code)
		}
	}
	res.Latency = summarise(r.lat.merged())
	return res, ctx.Err()
}

func addCode(res *Result, code int) {
	if res.CloseCodes == nil {
		res.CloseCodes = map[string]int{}
	}
	res.CloseCodes[strconv.Itoa(code)]++
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connectReceivers dials every receiver, DialConcurrency at a time; the
// first nSlow never read.
func (r *run) connectReceivers(ctx context.Context, addr string, nSlow int) error {
	cfg := r.cfg
	r.receivers = make([]*receiver, cfg.Receivers)
	for i := range r.receivers {
		ch := r.chans[i%len(r.chans)]
		rc := &receiver{id: i, ch: ch, slow: i < nSlow}
		if !rc.slow {
			ch.fast = append(ch.fast, rc)
		}
		r.receivers[i] = rc
	}
	return dialAll(ctx, r.receivers, cfg.DialConcurrency, func(rc *receiver) error {
		return r.dialReceiver(rc, addr)
	})
}

func (r *run) dialReceiver(rc *receiver, addr string) error {
	cfg := r.cfg
	// A receiver that does not read gets a small socket receive buffer:
	// otherwise loopback's autotuned buffers hold megabytes for it and the
	// server's queue for it fills only after minutes.
	readBuf, rcvBuf := 16<<10, 0
	if rc.slow {
		readBuf, rcvBuf = 4<<10, slowRcvBuf
	}
	if cfg.Mode == ModeCeiling {
		conn, err := dialTCP(addr, cfg.DialTimeout, rcvBuf)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(conn, rc.ch.name+"\n"); err != nil {
			conn.Close()
			return err
		}
		rc.tcp = conn
		rc.br = bufio.NewReaderSize(conn, readBuf)
		conn.SetReadDeadline(time.Now().Add(cfg.DialTimeout))
		if ok, err := rc.br.ReadString('\n'); err != nil || tcpproto.ParseReply(ok).Kind != tcpproto.ReplyOK {
			conn.Close()
			return fmt.Errorf("loadgen: ceiling receiver: %q, %v", ok, err)
		}
		conn.SetReadDeadline(time.Time{})
		return nil
	}
	ws, err := dialWS(addr, "/ws/"+rc.ch.name, cfg.WatchToken, cfg.DialTimeout, readBuf, rcvBuf)
	if err != nil {
		return err
	}
	rc.ws = ws
	return nil
}

// slowRcvBuf is a non-reading receiver's SO_RCVBUF (the kernel doubles it).
const slowRcvBuf = 4 << 10

// dialAll runs dial for every receiver, n at a time, and returns the first
// error.
func dialAll(ctx context.Context, rs []*receiver, n int, dial func(*receiver) error) error {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, rc := range rs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := dial(rc); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("loadgen: receiver %d: %w", rc.id, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// snap is the counters at one moment.
type snap struct {
	at           time.Time
	sent         uint64
	delivered    uint64
	perChannel   float64 // Σ over channels of mean received per reading receiver
	senderWrites uint64
	server       ServerStats
	serverOK     bool
	self         ProcStats
	selfOK       bool
}

func (r *run) snapshot() snap {
	s := snap{at: time.Now()}
	for _, x := range r.senders {
		s.sent += x.sent.Load()
	}
	for _, ch := range r.chans {
		var sum uint64
		for _, rc := range ch.fast {
			sum += rc.recv.Load()
		}
		s.delivered += sum
		if len(ch.fast) > 0 {
			s.perChannel += float64(sum) / float64(len(ch.fast))
		}
	}
	if r.cfg.Probe != nil {
		st, err := r.cfg.Probe.Stats(false)
		s.server, s.serverOK = st, err == nil
	}
	st, err := ReadProc(os.Getpid())
	s.self, s.selfOK = st, err == nil
	// Each sender flush is about one write syscall; estimated from bytes,
	// since bufio flushes when its 64 KiB fill or the sender waits.
	s.senderWrites = s.sent * uint64(r.cfg.Size+1) / (64 << 10)
	return s
}

// drain waits until every live reading receiver has all of its channel's
// messages, or nothing has arrived for a second, or cfg.Drain has passed.
func (r *run) drain(ctx context.Context) {
	deadline := time.Now().Add(r.cfg.Drain)
	last, lastChange := uint64(0), time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		done := true
		var total uint64
		for _, ch := range r.chans {
			want := ch.sent.Load()
			for _, rc := range ch.fast {
				n := rc.recv.Load()
				total += n
				if n < want && !rc.dead.Load() {
					done = false
				}
			}
		}
		if done {
			return
		}
		if total != last {
			last, lastChange = total, time.Now()
		} else if time.Since(lastChange) > time.Second {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// progress prints a line per second until the returned stop is called.
func (r *run) progress(ctx context.Context) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		prev := r.snapshot()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur := r.snapshot()
			d := cur.at.Sub(prev.at).Seconds()
			dead := 0
			for _, rc := range r.receivers {
				if !rc.slow && rc.dead.Load() {
					dead++
				}
			}
			line := fmt.Sprintf("[%3.0fs] offered %s msg/s  deliveries %s/s",
				time.Since(start).Seconds(), si(float64(cur.sent-prev.sent)/d), si(float64(cur.delivered-prev.delivered)/d))
			if cur.server.NATSInMsgs > 0 {
				line += fmt.Sprintf("  nats in %s msg/s", si(float64(cur.server.NATSInMsgs-prev.server.NATSInMsgs)/d))
			}
			if cur.serverOK && prev.serverOK {
				line += fmt.Sprintf("  server cpu %.2f cores", (cur.server.CPUSeconds-prev.server.CPUSeconds)/d)
			}
			if dead > 0 {
				line += fmt.Sprintf("  disconnected %d", dead)
			}
			fmt.Fprintln(r.cfg.Progress, line)
			prev = cur
		}
	})
	return func() { close(done); wg.Wait() }
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// runNATS publishes flat out with a bare nats.go connection: S goroutines
// share it, as ingest's senders share ingest's connection.
func runNATS(ctx context.Context, cfg Config) (*Result, error) {
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("relay-bench"), nats.Timeout(cfg.DialTimeout))
	if err != nil {
		return nil, fmt.Errorf("loadgen: nats: %w", err)
	}
	defer nc.Close()
	clk := newClock()
	var stop atomic.Bool
	var sent atomic.Uint64
	var wg sync.WaitGroup
	for i := range cfg.Senders {
		subject := cfg.SubjectPrefix + ".ch." + cfg.ChannelPrefix + "." + strconv.Itoa(i%cfg.Channels)
		wg.Go(func() {
			p := newPayload(cfg.Size)
			msg := &nats.Msg{Subject: subject, Data: p}
			if cfg.NATSHeader {
				msg.Header = nats.Header{subjects.FormatHeader: []string{subjects.FormatText}}
			}
			for k := 0; ; k++ {
				if k&15 == 0 && stop.Load() {
					return
				}
				stamp(p, clk.now())
				if err := nc.PublishMsg(msg); err != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	res := &Result{Mode: cfg.Mode, Senders: cfg.Senders, Channels: cfg.Channels, Size: cfg.Size, NATSHeader: cfg.NATSHeader}
	type pt struct {
		at   time.Time
		sent uint64
		st   ServerStats
		ok   bool
	}
	take := func() pt {
		p := pt{at: time.Now(), sent: sent.Load()}
		if cfg.Probe != nil {
			st, err := cfg.Probe.Stats(false)
			p.st, p.ok = st, err == nil
		}
		return p
	}
	progress := func(prev pt) pt {
		cur := take()
		if cfg.Progress != nil {
			d := cur.at.Sub(prev.at).Seconds()
			fmt.Fprintf(cfg.Progress, "[nats] published %s msg/s  nats in %s msg/s\n",
				si(float64(cur.sent-prev.sent)/d), si(float64(cur.st.NATSInMsgs-prev.st.NATSInMsgs)/d))
		}
		return cur
	}
	tick := func(d time.Duration, prev pt) pt {
		end := time.Now().Add(d)
		for time.Until(end) > 0 && ctx.Err() == nil {
			sleepCtx(ctx, min(time.Second, time.Until(end)))
			prev = progress(prev)
		}
		return prev
	}
	tick(cfg.Warmup, take())
	a := take()
	if cfg.OnMeasure != nil {
		go cfg.OnMeasure(cfg.Duration)
	}
	tick(cfg.Duration, a)
	b := take()
	stop.Store(true)
	wg.Wait()
	_ = nc.FlushTimeout(cfg.DialTimeout)

	secs := b.at.Sub(a.at).Seconds()
	res.Seconds = secs
	res.Sent = b.sent - a.sent
	if secs > 0 {
		res.OfferedPerSec = float64(res.Sent) / secs
		if b.st.NATSInMsgs > 0 {
			res.NATSInPerSec = float64(b.st.NATSInMsgs-a.st.NATSInMsgs) / secs
		}
	}
	if cfg.Probe != nil && a.ok && b.ok {
		res.Server = newServerReport(cfg.Probe, a.st, b.st, secs, 0, 0)
	}
	return res, ctx.Err()
}

// runIdle connects cfg.Receivers receivers that receive nothing and
// measures the server's memory before and after, both after a GC when the
// probe can ask for one.
func runIdle(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Probe == nil {
		return nil, errors.New("loadgen: idle mode needs a server probe")
	}
	before, err := cfg.Probe.Stats(true)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, clk: newClock(), lat: newLatencies()}
	// A channel per run keeps these clients apart from any other traffic.
	for i := range cfg.Channels {
		r.chans = append(r.chans, &chanState{name: r.channelName(i)})
	}
	defer func() {
		for _, rc := range r.receivers {
			rc.close()
		}
	}()
	start := time.Now()
	if err := r.connectReceivers(ctx, cfg.FanoutAddr, 0); err != nil {
		return nil, err
	}
	var readers sync.WaitGroup
	for _, rc := range r.receivers {
		readers.Go(func() { rc.run(r.clk, &r.win, r.lat) })
	}
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "[idle] %d connections open after %s; settling for %s\n",
			len(r.receivers), time.Since(start).Round(time.Millisecond), cfg.Duration)
	}
	sleepCtx(ctx, cfg.Duration)
	after, err := cfg.Probe.Stats(true)
	if err != nil {
		return nil, err
	}
	if cfg.AtPeak != nil {
		cfg.AtPeak()
	}
	alive := 0
	for _, rc := range r.receivers {
		if !rc.dead.Load() {
			alive++
		}
	}
	n := float64(len(r.receivers))
	res := &Result{Mode: ModeIdle, Receivers: cfg.Receivers, Channels: cfg.Channels, Seconds: cfg.Duration.Seconds()}
	res.Idle = &IdleReport{
		Measured:        cfg.Probe.Describe(),
		Connected:       alive,
		RSSBeforeBytes:  before.RSSBytes,
		RSSAfterBytes:   after.RSSBytes,
		RSSPerConnBytes: float64(after.RSSBytes-before.RSSBytes) / n,
	}
	if after.HeapInuse > 0 {
		res.Idle.HeapPerConnBytes = (float64(after.HeapInuse) - float64(before.HeapInuse)) / n
		res.Idle.StackPerConn = (float64(after.StackInuse) - float64(before.StackInuse)) / n
		res.Idle.GoroutinesPer = float64(after.Goroutines-before.Goroutines) / n
	}
	res.Disconnected = len(r.receivers) - alive
	for _, rc := range r.receivers {
		rc.close()
	}
	readers.Wait()
	return res, ctx.Err()
}
