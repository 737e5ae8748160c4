package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// BurstReport is ModeBurst's answer: the largest unpaced burst every
// receiver survived, and each trial that found it.
type BurstReport struct {
	// Largest is the most lines of one burst that every receiver got whole
	// without being closed; 0 if even the first trial failed.
	Largest      int `json:"largest_lines"`
	LargestBytes int `json:"largest_bytes"`
	// Capped: no trial failed up to BurstMax, so Largest is a lower bound.
	Capped bool         `json:"capped,omitempty"`
	Trials []BurstTrial `json:"trials"`
	// PeakRSSBytes is the server's largest RSS seen at the end of a trial
	// (0 without a probe).
	PeakRSSBytes int64 `json:"peak_rss_bytes,omitempty"`
}

// BurstTrial is one burst: Lines lines of the run's Size written by one
// sender with one write, as `cat log | nc` does.
type BurstTrial struct {
	Lines      int            `json:"lines"`
	Bytes      int            `json:"bytes"`
	Survived   int            `json:"survived"` // receivers that got every line and stayed connected
	Closed     int            `json:"closed"`
	CloseCodes map[string]int `json:"close_codes,omitempty"`
	Seconds    float64        `json:"seconds"` // from the write to the last receiver done
	RSSBytes   int64          `json:"rss_bytes,omitempty"`
}

// OK reports whether every receiver survived the trial.
func (t BurstTrial) OK(receivers int) bool { return t.Survived == receivers }

// runBurst finds the largest unpaced burst cfg.Receivers readers on one
// channel all survive: bursts of BurstStart lines doubling until one fails
// (or BurstMax), then BurstSteps bisections between the last success and
// the first failure. Each trial uses a fresh channel and fresh receivers.
func runBurst(ctx context.Context, cfg Config) (*Result, error) {
	rep := &BurstReport{}
	start := time.Now()
	trial := func(lines, k int) (BurstTrial, error) {
		tr, err := burstTrial(ctx, cfg, lines, cfg.ChannelPrefix+"-burst."+strconv.Itoa(k))
		if err == nil {
			rep.Trials = append(rep.Trials, tr)
			rep.PeakRSSBytes = max(rep.PeakRSSBytes, tr.RSSBytes)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "[burst] %d lines (%s): %d of %d receivers survived in %.1fs %v\n",
					tr.Lines, si(float64(tr.Bytes))+"B", tr.Survived, cfg.Receivers, tr.Seconds, tr.CloseCodes)
			}
		}
		return tr, err
	}
	good, bad, k := 0, 0, 0
	for n := cfg.BurstStart; n <= cfg.BurstMax; n *= 2 {
		tr, err := trial(n, k)
		k++
		if err != nil {
			return nil, err
		}
		if !tr.OK(cfg.Receivers) {
			bad = n
			break
		}
		good = n
	}
	for range cfg.BurstSteps {
		if bad == 0 || bad-good <= max(1, good/50) {
			break
		}
		n := (good + bad) / 2
		tr, err := trial(n, k)
		k++
		if err != nil {
			return nil, err
		}
		if tr.OK(cfg.Receivers) {
			good = n
		} else {
			bad = n
		}
	}
	rep.Largest, rep.LargestBytes, rep.Capped = good, good*(cfg.Size+1), bad == 0
	return &Result{
		Mode: ModeBurst, Senders: 1, Receivers: cfg.Receivers, Channels: 1, Size: cfg.Size,
		Seconds: time.Since(start).Seconds(), Burst: rep,
	}, ctx.Err()
}

// burstTrial connects the receivers to channel, writes the burst with one
// write and waits until every receiver has it all, is closed, or has not
// moved for cfg.Drain.
func burstTrial(ctx context.Context, cfg Config, lines int, channel string) (BurstTrial, error) {
	tr := BurstTrial{Lines: lines, Bytes: lines * (cfg.Size + 1)}
	r := &run{cfg: cfg, clk: newClock(), lat: newLatencies()}
	ch := &chanState{name: channel}
	r.chans = []*chanState{ch}
	defer func() {
		for _, rc := range r.receivers {
			rc.close()
		}
	}()
	if err := r.connectReceivers(ctx, cfg.FanoutAddr, 0); err != nil {
		return tr, err
	}
	var readers sync.WaitGroup
	for _, rc := range r.receivers {
		readers.Go(func() {
			rc.end = rc.ws.readLoop(r.clk.now, func([]byte, int64) { rc.recv.Add(1) })
			rc.dead.Store(true)
		})
	}
	defer readers.Wait()
	conn, err := dialSender(cfg.IngestAddr, channel, cfg.SendToken, cfg.DialTimeout)
	if err != nil {
		return tr, err
	}
	defer conn.Close()
	line := bytes.Repeat([]byte("b"), cfg.Size)
	line = append(line, '\n')
	burst := bytes.Repeat(line, lines)
	began := time.Now()
	conn.SetWriteDeadline(time.Now().Add(cfg.Drain + time.Minute))
	if _, err := conn.Write(burst); err != nil {
		return tr, fmt.Errorf("loadgen: burst write: %w", err)
	}
	// Wait: done when every receiver is complete or dead; give up when no
	// receiver has moved for cfg.Drain.
	var last uint64
	moved := time.Now()
	for {
		var total uint64
		done := true
		for _, rc := range r.receivers {
			n := rc.recv.Load()
			total += n
			if n < uint64(lines) && !rc.dead.Load() {
				done = false
			}
		}
		if total != last {
			last, moved = total, time.Now()
		}
		if done || time.Since(moved) > cfg.Drain || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.Seconds = time.Since(began).Seconds()
	if cfg.Probe != nil {
		if st, err := cfg.Probe.Stats(false); err == nil {
			tr.RSSBytes = st.RSSBytes
		}
	}
	for _, rc := range r.receivers {
		rc.close()
	}
	readers.Wait()
	tr.CloseCodes = map[string]int{}
	for _, rc := range r.receivers {
		code := rc.closeCode()
		switch {
		case rc.recv.Load() >= uint64(lines) && code == 0:
			tr.Survived++
		case code != 0:
			tr.Closed++
			tr.CloseCodes[strconv.Itoa(code)]++
		default:
			tr.CloseCodes["incomplete"]++
		}
	}
	if len(tr.CloseCodes) == 0 {
		tr.CloseCodes = nil
	}
	return tr, nil
}
