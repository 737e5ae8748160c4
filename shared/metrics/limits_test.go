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
