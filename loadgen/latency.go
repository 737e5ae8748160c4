package loadgen

import (
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxLatency is the largest latency recorded (larger values are clamped).
const maxLatency = int64(60e9) // ns

// latencies is an HDR histogram of nanoseconds, sharded so that receivers
// rarely wait for each other; each receiver buffers samples and records
// them a batch at a time.
type latencies struct {
	shards [16]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [48]byte // keep shards on separate cache lines
	}
}

func newLatencies() *latencies {
	l := &latencies{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(1, maxLatency, 3)
	}
	return l
}

func (l *latencies) record(shard int, vals []int64) {
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	for _, v := range vals {
		_ = s.h.RecordValue(min(max(v, 1), maxLatency))
	}
	s.mu.Unlock()
}

// merged returns one histogram of every shard.
func (l *latencies) merged() *hdrhistogram.Histogram {
	out := hdrhistogram.New(1, maxLatency, 3)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// LatencyMS summarises a latency distribution in milliseconds.
type LatencyMS struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

func summarise(h *hdrhistogram.Histogram) LatencyMS {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return LatencyMS{
		Count: uint64(h.TotalCount()),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
