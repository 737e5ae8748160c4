package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SoakConfig describes a soak: a moderate, steady rate for a long time
// while senders and watchers come and go, with the server's RSS and
// goroutines sampled throughout. A server that leaks per connection or per
// message shows it as a slope; a bounded one stays flat.
type SoakConfig struct {
	// IngestAddr is an ingest handshake listener (CHANNEL */line).
	IngestAddr string
	// FanoutAddr is the fanout HTTP address.
	FanoutAddr string
	// Duration of the soak. Required.
	Duration time.Duration
	// Rate is the total messages per second over all senders. Defaults to 500.
	Rate float64
	// Senders and Watchers are how many are connected at any time; each one
	// that leaves is replaced at once. Default 8 and 40.
	Senders, Watchers int
	// Channels spreads senders and watchers over this many channels. Defaults to 4.
	Channels int
	// Size of each message in bytes (without the newline). Defaults to 100.
	Size int
	// SendToken and WatchToken are sent by senders (handshake) and watchers
	// (Authorization: Bearer) when the server runs with RELAY_AUTH=jwt.
	SendToken, WatchToken string
	// Lifetime is the mean time a sender or watcher stays connected (each
	// draws from 0.2x to 1.8x of it). Defaults to 10s.
	Lifetime time.Duration
	// Sample is the interval between readings of the server. Defaults to
	// Duration/120, between 1s and 10s.
	Sample time.Duration
	// Warmup is the start of the soak left out of the slopes (the heap
	// grows to its working size first, and the staggered clients take a
	// lifetime to all connect). Defaults to Duration/10 (at most 1m), and
	// at least two lifetimes.
	Warmup time.Duration
	// ChannelPrefix names the channels <prefix>.0 ... Defaults to soak.
	ChannelPrefix string
	// Probe reads the server's RSS and goroutines. Required.
	Probe Probe
	// Progress receives a line per sample; nil: quiet.
	Progress io.Writer
	// DialTimeout bounds each connection's setup. Defaults to 10s.
	DialTimeout time.Duration
}

func (c *SoakConfig) defaults() {
	if c.Rate <= 0 {
		c.Rate = 500
	}
	if c.Senders <= 0 {
		c.Senders = 8
	}
	if c.Watchers <= 0 {
		c.Watchers = 40
	}
	if c.Channels <= 0 {
		c.Channels = 4
	}
	if c.Size <= 0 {
		c.Size = 100
	}
	if c.Lifetime <= 0 {
		c.Lifetime = 10 * time.Second
	}
	if c.Sample <= 0 {
		c.Sample = min(max(c.Duration/120, time.Second), 10*time.Second)
	}
	if c.Warmup <= 0 {
		c.Warmup = max(min(c.Duration/10, time.Minute), 2*c.Lifetime)
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = "soak"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
}

// Validate reports every problem with c.
func (c SoakConfig) Validate() error {
	c.defaults()
	var errs []error
	add := func(f string, a ...any) { errs = append(errs, fmt.Errorf(f, a...)) }
	if c.IngestAddr == "" || c.FanoutAddr == "" {
		add("soak: an ingest and a fanout address are needed")
	}
	if c.Duration <= 0 {
		add("soak: duration %s: must be positive", c.Duration)
	}
	if c.Probe == nil {
		add("soak: a probe of the server is needed")
	}
	if c.Size < soakMinSize {
		add("soak: size %d: must be at least %d", c.Size, soakMinSize)
	}
	if c.Warmup >= c.Duration {
		add("soak: warmup %s: must be shorter than the duration %s", c.Warmup, c.Duration)
	}
	return errors.Join(errs...)
}

// soakMinSize fits "<sender id> <seq> " with room to spare.
const soakMinSize = 32

// SoakSample is one reading of the server during a soak.
type SoakSample struct {
	Seconds    float64 `json:"t"`
	RSSBytes   int64   `json:"rss_bytes"`
	HeapInuse  uint64  `json:"heap_inuse_bytes,omitempty"`
	Goroutines int     `json:"goroutines,omitempty"`
	Senders    int     `json:"senders"`
	Watchers   int     `json:"watchers"`
}

// SoakResult is a soak's report; its JSON is `relay bench --soak --json`.
type SoakResult struct {
	Measured string  `json:"measured"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	Senders  int     `json:"senders"`
	Watchers int     `json:"watchers"`
	Channels int     `json:"channels"`
	Size     int     `json:"size"`
	Lifetime string  `json:"lifetime"`
	Warmup   string  `json:"warmup"`

	// Slopes by least squares over the samples after the warmup, per minute.
	RSSSlopeMiBPerMin    float64 `json:"rss_slope_mib_per_min"`
	HeapSlopeMiBPerMin   float64 `json:"heap_slope_mib_per_min,omitempty"`
	GoroutineSlopePerMin float64 `json:"goroutine_slope_per_min"`
	RSSMeanBytes         int64   `json:"rss_mean_bytes"`
	RSSMaxBytes          int64   `json:"rss_max_bytes"`
	GoroutinesMin        int     `json:"goroutines_min,omitempty"`
	GoroutinesMax        int     `json:"goroutines_max,omitempty"`
	// Goroutines of the server before any client connected, and once every
	// client has left at the end: equal when nothing leaked.
	GoroutinesBefore int `json:"goroutines_before,omitempty"`
	GoroutinesAfter  int `json:"goroutines_after,omitempty"`
	// RSS after a GC (when the probe can ask for one) before the first
	// client and after the last has left: what a leak would leave behind,
	// apart from memory the runtime merely kept.
	RSSBeforeBytes int64 `json:"rss_before_bytes"`
	RSSAfterBytes  int64 `json:"rss_after_bytes"`
	// The Go heap in use at the same two moments (0: the probe cannot
	// tell): equal when no live object was left behind.
	HeapBeforeBytes uint64 `json:"heap_before_bytes,omitempty"`
	HeapAfterBytes  uint64 `json:"heap_after_bytes,omitempty"`

	SendersOpened  int    `json:"senders_opened"`
	WatchersOpened int    `json:"watchers_opened"`
	Written        uint64 `json:"written"`
	Delivered      uint64 `json:"delivered"`
	// Gaps counts messages a connected watcher missed from a sender it was
	// following without being told (must be 0).
	Gaps uint64 `json:"gaps"`
	// SenderErrors are -ERR replies or failed writes; DialErrors failed
	// connection attempts; WatcherCloses the close codes the server sent to
	// watchers that did not leave on their own.
	SenderErrors  int            `json:"sender_errors"`
	DialErrors    int            `json:"dial_errors"`
	WatcherCloses map[string]int `json:"watcher_closes,omitempty"`
	FirstErrors   []string       `json:"first_errors,omitempty"`

	Samples []SoakSample `json:"samples"`
}

// soak is the state of one soak run.
type soak struct {
	cfg     SoakConfig
	stop    atomic.Bool
	nextID  atomic.Uint64
	senders atomic.Int64 // connected now
	watches atomic.Int64

	written, delivered, gaps atomic.Uint64
	sendersOpened            atomic.Int64
	watchersOpened           atomic.Int64

	mu         sync.Mutex
	senderErrs int
	dialErrs   int
	closes     map[string]int
	firstErrs  []string
}

func (s *soak) channel(i int) string {
	return s.cfg.ChannelPrefix + "." + strconv.Itoa(i%s.cfg.Channels)
}

func (s *soak) lifetime() time.Duration {
	return time.Duration(float64(s.cfg.Lifetime) * (0.2 + 1.6*rand.Float64()))
}

func (s *soak) noteErr(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kind {
	case "sender":
		s.senderErrs++
	case "dial":
		s.dialErrs++
	}
	if len(s.firstErrs) < 10 {
		s.firstErrs = append(s.firstErrs, kind+": "+err.Error())
	}
}

// Soak runs a soak and returns its report. It takes cfg.Duration plus the
// time every client needs to leave and the server to settle (at most 30s).
func Soak(ctx context.Context, cfg SoakConfig) (*SoakResult, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &soak{cfg: cfg, closes: map[string]int{}}
	before, err := cfg.Probe.Stats(true)
	if err != nil {
		return nil, fmt.Errorf("loadgen: soak: read the server: %w", err)
	}

	var wg sync.WaitGroup
	// Each slot keeps one sender (or watcher) connected, replacing it when it
	// leaves; starts are staggered so lifetimes do not line up.
	for i := range cfg.Senders {
		wg.Go(func() { s.slot(func() { s.runSender(i) }, i, cfg.Senders) })
	}
	for i := range cfg.Watchers {
		wg.Go(func() { s.slot(func() { s.runWatcher(i) }, i, cfg.Watchers) })
	}

	start := time.Now()
	var samples []SoakSample
	tick := time.NewTicker(cfg.Sample)
	end := time.NewTimer(cfg.Duration)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end.C:
			break loop
		case <-tick.C:
			st, err := cfg.Probe.Stats(false)
			if err != nil {
				s.noteErr("probe", err)
				continue
			}
			smp := SoakSample{
				Seconds: time.Since(start).Seconds(), RSSBytes: st.RSSBytes, HeapInuse: st.HeapInuse,
				Goroutines: st.Goroutines, Senders: int(s.senders.Load()), Watchers: int(s.watches.Load()),
			}
			samples = append(samples, smp)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "soak %4.0fs: rss %s heap %s goroutines %d, %d senders %d watchers, written %d delivered %d gaps %d\n",
					smp.Seconds, mib(smp.RSSBytes), mib(int64(smp.HeapInuse)), smp.Goroutines, smp.Senders, smp.Watchers,
					s.written.Load(), s.delivered.Load(), s.gaps.Load())
			}
		}
	}
	tick.Stop()
	end.Stop()
	elapsed := time.Since(start)
	s.stop.Store(true)
	wg.Wait()

	res := &SoakResult{
		Measured: cfg.Probe.Describe(), Seconds: elapsed.Seconds(), Rate: cfg.Rate,
		Senders: cfg.Senders, Watchers: cfg.Watchers, Channels: cfg.Channels, Size: cfg.Size,
		Lifetime: cfg.Lifetime.String(), Warmup: cfg.Warmup.String(),
		GoroutinesBefore: before.Goroutines, RSSBeforeBytes: before.RSSBytes, HeapBeforeBytes: before.HeapInuse,
		SendersOpened: int(s.sendersOpened.Load()), WatchersOpened: int(s.watchersOpened.Load()),
		Written: s.written.Load(), Delivered: s.delivered.Load(), Gaps: s.gaps.Load(),
		SenderErrors: s.senderErrs, DialErrors: s.dialErrs, FirstErrors: s.firstErrs,
		Samples: samples,
	}
	if len(s.closes) > 0 {
		res.WatcherCloses = s.closes
	}
	res.summarise(cfg.Warmup)

	// Every client has left: the server's goroutines return to where they
	// started, give or take its timers, once it has noticed every close.
	settle := time.Now().Add(30 * time.Second)
	for {
		st, err := cfg.Probe.Stats(false)
		if err == nil {
			res.GoroutinesAfter = st.Goroutines
		}
		if err != nil || st.Goroutines <= before.Goroutines || time.Now().After(settle) || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st, err := cfg.Probe.Stats(true); err == nil {
		res.RSSAfterBytes, res.HeapAfterBytes = st.RSSBytes, st.HeapInuse
	}
	return res, nil
}

// slot runs one client after another until the soak stops.
func (s *soak) slot(run func(), i, n int) {
	// Stagger: slot i starts i/n of a lifetime late.
	if !s.sleep(time.Duration(float64(s.cfg.Lifetime) * float64(i) / float64(n))) {
		return
	}
	for !s.stop.Load() {
		run()
		// A failing server must not be hammered by reconnects.
		s.sleep(50 * time.Millisecond)
	}
}

// sleep waits d or until the soak stops; false when stopped.
func (s *soak) sleep(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !s.stop.Load() {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		time.Sleep(min(left, 100*time.Millisecond))
	}
	return false
}

// runSender connects, writes numbered lines "<id> <seq> <filler>" at its
// share of the rate for its lifetime, then closes its side and reads the
// server's reply: nothing is the only good answer.
func (s *soak) runSender(slot int) {
	cfg := s.cfg
	conn, err := dialSender(cfg.IngestAddr, s.channel(slot), cfg.SendToken, cfg.DialTimeout)
	if err != nil {
		s.noteErr("dial", err)
		return
	}
	defer conn.Close()
	s.sendersOpened.Add(1)
	s.senders.Add(1)
	defer s.senders.Add(-1)

	id := s.nextID.Add(1)
	prefix := strconv.FormatUint(id, 10) + " "
	filler := strings.Repeat("x", cfg.Size)
	interval := time.Duration(float64(time.Second) * float64(cfg.Senders) / cfg.Rate)
	bw := bufio.NewWriterSize(conn, 16<<10)
	until := time.Now().Add(s.lifetime())
	start := time.Now()
	var seq uint64
	var line []byte
	for !s.stop.Load() && time.Now().Before(until) {
		due := uint64(time.Since(start)/interval) + 1
		for ; seq < due; seq++ {
			line = strconv.AppendUint(append(line[:0], prefix...), seq, 10)
			line = append(line, ' ')
			line = append(line, filler[:cfg.Size-len(line)]...)
			line = append(line, '\n')
			conn.SetWriteDeadline(time.Now().Add(cfg.DialTimeout))
			if _, err := bw.Write(line); err != nil {
				s.noteErr("sender", err)
				return
			}
			s.written.Add(1)
		}
		if err := bw.Flush(); err != nil {
			s.noteErr("sender", err)
			return
		}
		time.Sleep(min(interval, 20*time.Millisecond))
	}
	if err := bw.Flush(); err != nil {
		s.noteErr("sender", err)
		return
	}
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(cfg.DialTimeout))
	reply, err := io.ReadAll(conn)
	if err != nil || len(reply) > 0 {
		s.noteErr("sender", fmt.Errorf("at close: reply %q, err %v", reply, err))
	}
}

// runWatcher connects, follows every sender's numbering (a watcher may
// join a sender mid-stream, so its first number from a sender is any)
// for its lifetime, then leaves.
func (s *soak) runWatcher(slot int) {
	cfg := s.cfg
	ws, err := dialWS(cfg.FanoutAddr, "/ws/"+s.channel(slot), cfg.WatchToken, cfg.DialTimeout, 64<<10, 0)
	if err != nil {
		s.noteErr("dial", err)
		return
	}
	s.watchersOpened.Add(1)
	s.watches.Add(1)
	defer s.watches.Add(-1)

	var leaving atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(s.lifetime())
		defer t.Stop()
		for !s.stop.Load() {
			select {
			case <-t.C:
				leaving.Store(true)
				ws.Close()
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		leaving.Store(true)
		ws.Close()
	}()

	next := map[uint64]uint64{} // sender id -> next number expected
	err = ws.readLoop(func() int64 { return 0 }, func(p []byte, _ int64) {
		s.delivered.Add(1)
		idEnd := strings.IndexByte(string(p), ' ')
		if idEnd < 0 {
			return
		}
		id, err1 := strconv.ParseUint(string(p[:idEnd]), 10, 64)
		rest := p[idEnd+1:]
		seqEnd := strings.IndexByte(string(rest), ' ')
		if err1 != nil || seqEnd < 0 {
			return
		}
		seq, err2 := strconv.ParseUint(string(rest[:seqEnd]), 10, 64)
		if err2 != nil {
			return
		}
		if want, ok := next[id]; ok && seq != want {
			if seq > want {
				s.gaps.Add(seq - want)
			} else {
				s.gaps.Add(1) // out of order or repeated
			}
		}
		next[id] = seq + 1
	})
	<-done
	var ce CloseError
	if !leaving.Load() || errors.As(err, &ce) {
		code := "eof"
		if errors.As(err, &ce) {
			code = strconv.Itoa(ce.Code)
		}
		if !leaving.Load() {
			s.mu.Lock()
			s.closes[code]++
			s.mu.Unlock()
		}
	}
}

// summarise fills the slopes and ranges from the samples after warmup.
func (r *SoakResult) summarise(warmup time.Duration) {
	var ts, rss, heap, gor []float64
	for _, smp := range r.Samples {
		r.RSSMaxBytes = max(r.RSSMaxBytes, smp.RSSBytes)
		if r.GoroutinesMin == 0 || smp.Goroutines < r.GoroutinesMin {
			r.GoroutinesMin = smp.Goroutines
		}
		r.GoroutinesMax = max(r.GoroutinesMax, smp.Goroutines)
		if smp.Seconds < warmup.Seconds() {
			continue
		}
		ts = append(ts, smp.Seconds/60)
		rss = append(rss, float64(smp.RSSBytes)/(1<<20))
		heap = append(heap, float64(smp.HeapInuse)/(1<<20))
		gor = append(gor, float64(smp.Goroutines))
	}
	r.RSSSlopeMiBPerMin = Slope(ts, rss)
	r.HeapSlopeMiBPerMin = Slope(ts, heap)
	r.GoroutineSlopePerMin = Slope(ts, gor)
	var sum float64
	for _, v := range rss {
		sum += v
	}
	if len(rss) > 0 {
		r.RSSMeanBytes = int64(sum / float64(len(rss)) * (1 << 20))
	}
}

// Slope is the least-squares slope of y over x (0 with fewer than two
// distinct x).
func Slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// WriteText prints r for people.
func (r *SoakResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "soak: %.0fs at %.0f msg/s, %d senders and %d watchers connected at a time (mean lifetime %s) over %d channel(s), %d B messages\n",
		r.Seconds, r.Rate, r.Senders, r.Watchers, r.Lifetime, r.Channels, r.Size)
	fmt.Fprintf(w, "clients:  %d senders and %d watchers came and went; written %d, delivered %d, gaps %d, sender errors %d, dial errors %d\n",
		r.SendersOpened, r.WatchersOpened, r.Written, r.Delivered, r.Gaps, r.SenderErrors, r.DialErrors)
	if len(r.WatcherCloses) > 0 {
		fmt.Fprintf(w, "watchers closed by the server: %v\n", r.WatcherCloses)
	}
	fmt.Fprintf(w, "server (%s), slopes after the first %s by least squares:\n", r.Measured, r.Warmup)
	fmt.Fprintf(w, "  RSS        %+.3f MiB/min (mean %s, max %s; after GC: %s before the first client, %s after the last left)\n",
		r.RSSSlopeMiBPerMin, mib(r.RSSMeanBytes), mib(r.RSSMaxBytes), mib(r.RSSBeforeBytes), mib(r.RSSAfterBytes))
	if r.GoroutinesMax > 0 {
		fmt.Fprintf(w, "  heap       %+.3f MiB/min (after GC: %s before the first client, %s after the last left)\n",
			r.HeapSlopeMiBPerMin, mib(int64(r.HeapBeforeBytes)), mib(int64(r.HeapAfterBytes)))
		fmt.Fprintf(w, "  goroutines %+.2f /min (between %d and %d; %d before the first client, %d after the last left)\n",
			r.GoroutineSlopePerMin, r.GoroutinesMin, r.GoroutinesMax, r.GoroutinesBefore, r.GoroutinesAfter)
	}
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}
