package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// RestartConfig describes a rolling restart: Receivers watchers held on
// fanout A, A told to stop, every watcher reconnecting to fanout B at once
// when A closes it (no client-side jitter: the spread is the server's).
type RestartConfig struct {
	FanoutA, FanoutB string // host:port
	Receivers        int
	Channels         int    // receivers spread over <ChannelPrefix>.0 .. Channels-1; default 1
	ChannelPrefix    string // default "restart"
	// Stop starts A's shutdown (cancel its Run, or SIGTERM its process).
	Stop func() error
	// ProbeB, when set, is sampled every 50 ms for B's RSS.
	ProbeB Probe
	// DialTimeout bounds each connection's setup (default 10s); Wait bounds
	// the whole restart from Stop (default 2 min).
	DialTimeout time.Duration
	Wait        time.Duration
	// DialConcurrency is how many receivers connect to A at once (default 64).
	DialConcurrency int
	Progress        io.Writer
}

// RestartReport is what the watchers saw.
type RestartReport struct {
	Receivers int `json:"receivers"`
	// GoingAway got a 1001 close frame before the TCP connection closed;
	// Abnormal saw the TCP connection end without a close frame (what a
	// browser reports as 1006).
	GoingAway  int            `json:"going_away"`
	Abnormal   int            `json:"abnormal_1006"`
	AbnormalBy map[string]int `json:"abnormal_errors,omitempty"`
	OtherCodes map[string]int `json:"other_codes,omitempty"`
	// Reconnected opened a WebSocket to B after A closed it (up to three
	// attempts, the second and third after 200 and 400 ms).
	Reconnected     int            `json:"reconnected"`
	ReconnectFailed int            `json:"reconnect_failed"`
	FailedBy        map[string]int `json:"reconnect_errors,omitempty"`
	// Seconds from Stop to the first and the last close seen, and to the
	// last reconnect completed.
	FirstClose    float64 `json:"first_close_s"`
	LastClose     float64 `json:"last_close_s"`
	LastReconnect float64 `json:"last_reconnect_s"`
	// Reconnects per second completed on B: over the whole storm, and in
	// its busiest 100 ms window (scaled to a second).
	ReconnectsPerSec     float64 `json:"reconnects_per_sec"`
	PeakReconnectsPerSec float64 `json:"peak_reconnects_per_sec_100ms"`
	// B's RSS before Stop and its peak during the storm.
	BRSSBeforeBytes int64 `json:"b_rss_before_bytes,omitempty"`
	BRSSPeakBytes   int64 `json:"b_rss_peak_bytes,omitempty"`
}

// GoingAwayFraction is GoingAway / Receivers.
func (r *RestartReport) GoingAwayFraction() float64 {
	if r.Receivers == 0 {
		return 0
	}
	return float64(r.GoingAway) / float64(r.Receivers)
}

type restartWatcher struct {
	ch        string
	a, b      *wsConn
	closedAt  atomic.Int64 // ns since Stop; 0 while open
	code      int          // close code from A (0: none, the TCP connection just ended)
	end       error        // how the read on A ended
	reconnAt  int64        // ns since Stop
	reconnErr error
}

// Restart holds cfg.Receivers watchers on A, calls cfg.Stop, and follows
// each watcher from A's close to its reconnect on B.
func Restart(ctx context.Context, cfg RestartConfig) (*RestartReport, error) {
	if cfg.Channels < 1 {
		cfg.Channels = 1
	}
	if cfg.ChannelPrefix == "" {
		cfg.ChannelPrefix = "restart"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 2 * time.Minute
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = 64
	}
	if cfg.Receivers < 1 || cfg.FanoutA == "" || cfg.FanoutB == "" || cfg.Stop == nil {
		return nil, errors.New("loadgen: restart needs receivers, both fanout addresses and Stop")
	}
	if _, err := RaiseFileLimit(); err != nil {
		return nil, fmt.Errorf("loadgen: raise file limit: %w", err)
	}
	ws := make([]*restartWatcher, cfg.Receivers)
	for i := range ws {
		ws[i] = &restartWatcher{ch: cfg.ChannelPrefix + "." + strconv.Itoa(i%cfg.Channels)}
	}
	defer func() {
		for _, w := range ws {
			if w.a != nil {
				w.a.Close()
			}
			if w.b != nil {
				w.b.Close()
			}
		}
	}()
	// Connect to A, DialConcurrency at a time.
	sem := make(chan struct{}, cfg.DialConcurrency)
	var dials sync.WaitGroup
	var dialErr atomic.Pointer[error]
	for _, w := range ws {
		if ctx.Err() != nil || dialErr.Load() != nil {
			break
		}
		sem <- struct{}{}
		dials.Go(func() {
			defer func() { <-sem }()
			c, err := dialWS(cfg.FanoutA, "/ws/"+w.ch, "", cfg.DialTimeout, 512, 0)
			if err != nil {
				dialErr.CompareAndSwap(nil, &err)
				return
			}
			w.a = c
		})
	}
	dials.Wait()
	if p := dialErr.Load(); p != nil {
		return nil, fmt.Errorf("loadgen: connect to A: %w", *p)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := &RestartReport{Receivers: cfg.Receivers}
	if cfg.Progress != nil {
		fmt.Fprintf(cfg.Progress, "[restart] %d watchers on %s; stopping it\n", cfg.Receivers, cfg.FanoutA)
	}
	// B's RSS, sampled until the end.
	var peak atomic.Int64
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	if cfg.ProbeB != nil {
		if st, err := cfg.ProbeB.Stats(false); err == nil {
			rep.BRSSBeforeBytes = st.RSSBytes
			peak.Store(st.RSSBytes)
		}
		go func() {
			defer close(sampleDone)
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopSampling:
					return
				case <-t.C:
					if st, err := cfg.ProbeB.Stats(false); err == nil && st.RSSBytes > peak.Load() {
						peak.Store(st.RSSBytes)
					}
				}
			}
		}()
	} else {
		close(sampleDone)
	}

	begin := time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			err := w.a.readLoop(func() int64 { return 0 }, func([]byte, int64) {})
			w.closedAt.Store(int64(max(time.Since(begin), 1)))
			var ce CloseError
			if errors.As(err, &ce) {
				w.code = ce.Code
			}
			w.end = err
			w.a.Close()
			if ctx.Err() != nil {
				return
			}
			// As a client should: at once, then with a short backoff.
			for attempt := range 3 {
				if attempt > 0 {
					time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
				}
				var c *wsConn
				if c, err = dialWS(cfg.FanoutB, "/ws/"+w.ch, "", cfg.DialTimeout, 512, 0); err == nil {
					w.b = c
					break
				}
			}
			w.reconnAt = int64(time.Since(begin))
			w.reconnErr = err
		})
	}
	if err := cfg.Stop(); err != nil {
		return nil, fmt.Errorf("loadgen: stop A: %w", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.Wait):
		for _, w := range ws {
			w.a.Close()
		}
		<-done
		return nil, fmt.Errorf("loadgen: restart: watchers still on A after %s", cfg.Wait)
	case <-ctx.Done():
		for _, w := range ws {
			w.a.Close()
		}
		<-done
		return nil, ctx.Err()
	}
	close(stopSampling)
	<-sampleDone
	rep.BRSSPeakBytes = peak.Load()

	var first, last, lastRe int64 = -1, 0, 0
	buckets := map[int64]int{}
	for _, w := range ws {
		at := w.closedAt.Load()
		if first < 0 || at < first {
			first = at
		}
		last = max(last, at)
		switch w.code {
		case 1001:
			rep.GoingAway++
		case 0:
			rep.Abnormal++
			if rep.AbnormalBy == nil {
				rep.AbnormalBy = map[string]int{}
			}
			rep.AbnormalBy[fmt.Sprint(w.end)]++
		default:
			if rep.OtherCodes == nil {
				rep.OtherCodes = map[string]int{}
			}
			rep.OtherCodes[strconv.Itoa(w.code)]++
		}
		if w.reconnErr != nil {
			rep.ReconnectFailed++
			if rep.FailedBy == nil {
				rep.FailedBy = map[string]int{}
			}
			rep.FailedBy[w.reconnErr.Error()]++
			continue
		}
		rep.Reconnected++
		lastRe = max(lastRe, w.reconnAt)
		buckets[w.reconnAt/int64(100*time.Millisecond)]++
	}
	rep.FirstClose = time.Duration(first).Seconds()
	rep.LastClose = time.Duration(last).Seconds()
	rep.LastReconnect = time.Duration(lastRe).Seconds()
	if span := rep.LastReconnect - rep.FirstClose; span > 0 {
		rep.ReconnectsPerSec = float64(rep.Reconnected) / span
	}
	for _, n := range buckets {
		rep.PeakReconnectsPerSec = max(rep.PeakReconnectsPerSec, float64(n)*10)
	}
	return rep, nil
}

// WriteText prints r for people.
func (r *RestartReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "rolling restart: %d watchers on A, A stopped\n", r.Receivers)
	fmt.Fprintf(w, "  1001 before the TCP close: %d (%.2f%%); TCP closed without a close frame (1006): %d %v; other codes: %v\n",
		r.GoingAway, 100*r.GoingAwayFraction(), r.Abnormal, r.AbnormalBy, r.OtherCodes)
	fmt.Fprintf(w, "  closes from %.2fs to %.2fs after the stop; reconnected to B: %d (failed %d %v), last at %.2fs\n",
		r.FirstClose, r.LastClose, r.Reconnected, r.ReconnectFailed, r.FailedBy, r.LastReconnect)
	fmt.Fprintf(w, "  reconnects on B: %.0f/s over the storm, %.0f/s in its busiest 100 ms\n", r.ReconnectsPerSec, r.PeakReconnectsPerSec)
	if r.BRSSPeakBytes > 0 {
		fmt.Fprintf(w, "  B's RSS: %s before, %s at peak\n", mib(r.BRSSBeforeBytes), mib(r.BRSSPeakBytes))
	}
}
