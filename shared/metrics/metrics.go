// Package metrics defines relay's Prometheus collectors (prefix relay_). Each
// process builds one Registry; ingest and fanout take the part they update.
// Counter label values are fixed, typed reasons (never channel names or peer
// addresses), so cardinality stays bounded whatever senders do.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry holds every relay collector of one process.
type Registry struct {
	reg    *prometheus.Registry
	Ingest *Ingest
	Fanout *Fanout
}

// New returns a Registry with Go runtime and process collectors and all of
// relay's metrics registered.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r := &Registry{reg: reg, Ingest: newIngest(), Fanout: newFanout()}
	reg.MustRegister(r.Ingest.collectors()...)
	reg.MustRegister(r.Fanout.collectors()...)
	authRefused := newAuthRefused()
	reg.MustRegister(authRefused)
	r.Ingest.AuthRefused = authRefused.MustCurryWith(prometheus.Labels{"tier": "ingest"})
	r.Fanout.AuthRefused = authRefused.MustCurryWith(prometheus.Labels{"tier": "fanout"})
	return r
}

// Handler serves the registry in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// Gatherer exposes the registry to tests and tools.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// MustRegister adds collectors owned elsewhere (e.g. NATS connection state).
func (r *Registry) MustRegister(cs ...prometheus.Collector) { r.reg.MustRegister(cs...) }

// NATSConnected returns a gauge for a tier's NATS connection state; fn is
// read at scrape time, so the value can never go stale.
func NATSConnected(tier string, fn func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "relay_nats_connected",
		Help:        "1 while this tier's NATS connection is connected, else 0.",
		ConstLabels: prometheus.Labels{"tier": tier},
	}, fn)
}

// NATSEvents counts NATS connection events (disconnect, reconnect, error) per tier.
func NATSEvents(tier string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "relay_nats_events_total",
		Help:        "NATS connection events by type: disconnect, reconnect, error.",
		ConstLabels: prometheus.Labels{"tier": tier},
	}, []string{"event"})
}

// AuthReasons are the reason label values of relay_auth_refused_total (the
// auth.Reason values); every tier's series start at zero.
var AuthReasons = []string{"missing", "invalid", "expired", "forbidden"}

// newAuthRefused is relay_auth_refused_total{tier,reason}.
func newAuthRefused() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_auth_refused_total",
		Help: "Senders and receivers refused by authentication, by tier and reason (missing, invalid, expired, forbidden); expired also counts connections ended at their token's exp.",
	}, []string{"tier", "reason"})
	for _, tier := range []string{"ingest", "fanout"} {
		for _, r := range AuthReasons {
			v.WithLabelValues(tier, r)
		}
	}
	return v
}

// Ingest is the ingest tier's metrics.
type Ingest struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Messages         prometheus.Counter
	Bytes            prometheus.Counter
	Refused          *prometheus.CounterVec // by reason
	PublishRetries   prometheus.Counter
	// AuthRefused is relay_auth_refused_total{tier="ingest"}, by reason.
	AuthRefused *prometheus.CounterVec
}

func newIngest() *Ingest {
	return &Ingest{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_ingest_connections", Help: "Sender TCP connections open now.",
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_connections_total", Help: "Sender TCP connections accepted.",
		}),
		Messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_messages_total", Help: "Messages published to NATS.",
		}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_bytes_total", Help: "Payload bytes published to NATS.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ingest_refused_total",
			Help: "Senders or messages refused, by reason (bad_handshake, bad_channel, handshake_timeout, too_large, too_many_connections, publish_failed).",
		}, []string{"reason"}),
		PublishRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_publish_retries_total",
			Help: "Publishes retried because NATS could not take more (sender reads paused meanwhile).",
		}),
	}
}

func (m *Ingest) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.ConnectionsTotal, m.Messages, m.Bytes, m.Refused, m.PublishRetries}
}

// Fanout is the fanout tier's metrics.
type Fanout struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Subscriptions    prometheus.Gauge
	MessagesIn       prometheus.Counter
	Deliveries       prometheus.Counter
	BytesOut         prometheus.Counter
	Refused          *prometheus.CounterVec // upgrade refusals by reason
	Disconnects      *prometheus.CounterVec // client closes by reason
	SlowConsumers    *prometheus.CounterVec // kind: client, nats
	// AuthRefused is relay_auth_refused_total{tier="fanout"}, by reason.
	AuthRefused *prometheus.CounterVec
}

func newFanout() *Fanout {
	return &Fanout{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_fanout_connections", Help: "WebSocket clients connected now.",
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_connections_total", Help: "WebSocket upgrades completed.",
		}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_fanout_subscriptions", Help: "Channels with a NATS subscription (at least one local client) now.",
		}),
		MessagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_messages_total", Help: "Messages received from NATS.",
		}),
		Deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_deliveries_total", Help: "Messages written to WebSocket clients (one per client per message).",
		}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_bytes_total", Help: "Payload bytes written to WebSocket clients.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_fanout_refused_total",
			Help: "WebSocket upgrades refused, by reason (bad_channel, bad_origin, too_many_connections, draining, subscribe_failed, bad_request).",
		}, []string{"reason"}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_fanout_disconnects_total",
			Help: "WebSocket clients closed, by reason (client_closed, slow_consumer, nats_slow_consumer, client_data, write_error, ping_timeout, shutdown, nats_disconnected).",
		}, []string{"reason"}),
		SlowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_fanout_slow_consumers_total",
			Help: "Slow-consumer events: kind=client (a WebSocket client's queue was full), kind=nats (NATS dropped messages for a subscription).",
		}, []string{"kind"}),
	}
}

func (m *Fanout) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.ConnectionsTotal, m.Subscriptions, m.MessagesIn, m.Deliveries, m.BytesOut, m.Refused, m.Disconnects, m.SlowConsumers}
}
