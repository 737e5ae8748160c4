package metrics

import (
	"strings"
	"testing"
)

func TestKeepTiersServesOnlyTheTiersRun(t *testing.T) {
	t.Parallel()
	r := New()
	r.KeepTiers("fanout")
	r.MustRegister(MaxConnections("fanout", 100000))
	mfs, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]float64{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) > 0 && mf.GetMetric()[0].GetGauge() != nil {
			names[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		} else {
			names[mf.GetName()] = 0
		}
		if strings.HasPrefix(mf.GetName(), "relay_ingest_") {
			t.Errorf("a fanout-only registry serves %s", mf.GetName())
		}
	}
	if _, ok := names["relay_fanout_connections"]; !ok {
		t.Error("relay_fanout_connections missing")
	}
	if names["relay_fanout_max_connections"] != 100000 {
		t.Errorf("relay_fanout_max_connections = %v, want the limit 100000", names["relay_fanout_max_connections"])
	}
}

// Every reason a counter can carry is served at 0 before it first happens,
// so that increase() over a window that starts before it counts it.
func TestReasonsServedFromTheStart(t *testing.T) {
	t.Parallel()
	r := New()
	mfs, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				got[mf.GetName()+"/"+l.GetValue()] = m.GetCounter().GetValue() == 0
			}
		}
	}
	for _, want := range []string{"relay_ingest_refused_total/publish_failed", "relay_fanout_disconnects_total/nats_disconnected",
		"relay_fanout_slow_consumers_total/nats", "relay_fanout_refused_total/too_many_connections"} {
		if zero, ok := got[want]; !ok || !zero {
			t.Errorf("%s: served %v, at 0 %v", want, ok, zero)
		}
	}
}
