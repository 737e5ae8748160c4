package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxConnections exposes a tier's configured connection limit
// (RELAY_INGEST_MAX_CONNECTIONS, RELAY_FANOUT_MAX_CONNECTIONS) as the gauge
// relay_<tier>_max_connections, so a dashboard or an alert can compare
// relay_<tier>_connections with it without knowing the configuration (as
// process_open_fds has process_max_fds).
func MaxConnections(tier string, limit int) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "relay_" + tier + "_max_connections",
		Help: "Most concurrent connections this " + tier + " process accepts (its configured limit); more are refused.",
	})
	g.Set(float64(limit))
	return g
}

// KeepTiers unregisters the collectors of every tier not named, so that a
// process serves the metrics of the tiers it runs ('relay ingest' no
// relay_fanout_* series stuck at 0, which would clutter per-process panels).
func (r *Registry) KeepTiers(tiers ...string) {
	if !slices.Contains(tiers, "ingest") {
		for _, c := range r.Ingest.collectors() {
			r.reg.Unregister(c)
		}
	}
	if !slices.Contains(tiers, "fanout") {
		for _, c := range r.Fanout.collectors() {
			r.reg.Unregister(c)
		}
	}
}
