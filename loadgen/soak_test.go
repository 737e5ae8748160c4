package loadgen

import (
	"math"
	"testing"
	"time"
)

func TestSlope(t *testing.T) {
	for _, tc := range []struct {
		name string
		x, y []float64
		want float64
	}{
		{"line", []float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}, 2},
		{"flat with noise", []float64{0, 1, 2, 3}, []float64{5, 6, 5, 6}, 0.2},
		{"falling", []float64{1, 2, 3}, []float64{3, 2, 1}, -1},
		{"one point", []float64{1}, []float64{3}, 0},
		{"same x", []float64{1, 1}, []float64{3, 4}, 0},
	} {
		if got := Slope(tc.x, tc.y); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: slope %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSoakSummaryLeavesOutWarmup: the slopes are per minute and fitted to
// the samples after the warm-up only.
func TestSoakSummaryLeavesOutWarmup(t *testing.T) {
	r := &SoakResult{}
	for s := 0; s <= 600; s += 10 {
		smp := SoakSample{Seconds: float64(s), RSSBytes: 100 << 20, Goroutines: 50, HeapInuse: 10 << 20}
		if s < 60 { // warm-up: growing
			smp.RSSBytes = int64(s) << 20
			smp.Goroutines = s + 5
		} else { // after: RSS grows 1 MiB a minute, goroutines flat
			smp.RSSBytes += int64(s-60) << 20 / 60
		}
		r.Samples = append(r.Samples, smp)
	}
	r.summarise(time.Minute)
	if math.Abs(r.RSSSlopeMiBPerMin-1) > 0.05 || math.Abs(r.GoroutineSlopePerMin) > 1e-9 || math.Abs(r.HeapSlopeMiBPerMin) > 1e-9 {
		t.Fatalf("slopes RSS %v MiB/min, goroutines %v/min, heap %v MiB/min; want 1, 0, 0", r.RSSSlopeMiBPerMin, r.GoroutineSlopePerMin, r.HeapSlopeMiBPerMin)
	}
	if r.GoroutinesMin != 5 || r.GoroutinesMax != 55 {
		t.Fatalf("goroutines %d-%d, want 5-55 (ranges cover the whole run)", r.GoroutinesMin, r.GoroutinesMax)
	}
}

func TestSoakValidate(t *testing.T) {
	err := SoakConfig{}.Validate()
	if err == nil {
		t.Fatal("empty config accepted")
	}
	ok := SoakConfig{IngestAddr: "a", FanoutAddr: "b", Duration: time.Minute, Probe: PIDProbe{PID: 1}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
