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

// NATSEvents counts a tier's NATS connection events; register it with
// Collector.
func NATSEvents(tier string) *ReasonCounter[NATSEvent] {
	return newReasonCounter(prometheus.CounterOpts{
		Name:        "relay_nats_events_total",
		ConstLabels: prometheus.Labels{"tier": tier},
	}, "event", "NATS connection events,", NATSEventKinds())
}

// Collector is what to register for c.
func (c *ReasonCounter[T]) Collector() prometheus.Collector { return c.vec }

// Ingest is the ingest tier's metrics.
type Ingest struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Messages         prometheus.Counter
	Bytes            prometheus.Counter
	Refused          *ReasonCounter[IngestRefusal]
	PublishRetries   prometheus.Counter
	Unpublished      *ReasonCounter[IngestUnpublished] // messages read but never published
	Held             prometheus.Gauge                  // senders paused because NATS cannot take their message
	Throttled        prometheus.Counter                // pauses for RELAY_INGEST_MAX_RATE
	// Durable channels (JetStream).
	Stored       prometheus.Counter          // messages the stream acknowledged
	StoreRetries prometheus.Counter          // publishes retried after a failed or missing ack
	AcksPending  prometheus.Gauge            // published, ack not yet in
	AuthRefused  *ReasonCounter[AuthRefusal] // relay_auth_refused_total{tier="ingest"}
	// Talking back: control messages written to senders, or dropped.
	ControlMessages      *ReasonCounter[ControlResult]
	ControlSubscriptions prometheus.Gauge // channels with senders here whose control subject ingest reads
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
			Name: "relay_ingest_messages_total", Help: "Messages published to NATS (accepted from senders); held or refused ones are not counted.",
		}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_bytes_total", Help: "Payload bytes published to NATS.",
		}),
		Refused: newReasonCounter(prometheus.CounterOpts{Name: "relay_ingest_refused_total"},
			"reason", "Senders or messages refused (the sender got -ERR and was closed),", IngestRefusals()),
		Unpublished: newReasonCounter(prometheus.CounterOpts{Name: "relay_ingest_unpublished_total"},
			"reason", "Messages read from a sender but never published, so not counted as accepted (the sender was told with -ERR and N accepted),", IngestUnpublishedReasons()),
		Held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_ingest_senders_held",
			Help: "Senders paused now because NATS cannot take their next message (not reading: TCP pushes back).",
		}),
		PublishRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_publish_retries_total",
			Help: "Publishes retried because NATS could not take more (sender reads paused meanwhile).",
		}),
		Throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_throttled_total",
			Help: "Times a sender over RELAY_INGEST_MAX_RATE was read more slowly (paused before its next message; nothing dropped).",
		}),
		Stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_stored_total",
			Help: "Messages of durable channels the JetStream stream acknowledged (stored; a duplicate of one already stored counts once).",
		}),
		StoreRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingest_store_retries_total",
			Help: "Durable publishes sent again (same Nats-Msg-Id, so stored once) after an error or no ack in time.",
		}),
		AcksPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_ingest_acks_pending",
			Help: "Durable messages published whose ack their connection has not yet taken (in order); the publishes still awaiting the stream are bounded by RELAY_INGEST_DURABLE_IN_FLIGHT.",
		}),
		AuthRefused: newAuthRefused("ingest"),
		ControlMessages: newReasonCounter(prometheus.CounterOpts{Name: "relay_ingest_control_messages_total"},
			"result", "Control messages for TCP senders (one per sender per message),", ControlResults()),
		ControlSubscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_ingest_control_subscriptions", Help: "Control channels with at least one sender here, whose <prefix>.ctl.<channel> subject this ingest reads.",
		}),
	}
}

// newAuthRefused is relay_auth_refused_total for one tier, every reason's
// series present from the start (at zero) so alerts see them.
func newAuthRefused(tier string) *ReasonCounter[AuthRefusal] {
	c := newReasonCounter(prometheus.CounterOpts{Name: "relay_auth_refused_total", ConstLabels: prometheus.Labels{"tier": tier}},
		"reason", "Senders and receivers refused for their token (expired also counts connections ended at exp),", AuthRefusals())
	for _, r := range AuthRefusals() {
		c.With(r)
	}
	return c
}

func (m *Ingest) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.ConnectionsTotal, m.Messages, m.Bytes, m.Refused.vec, m.PublishRetries, m.Unpublished.vec, m.Held, m.Throttled, m.AuthRefused.vec,
		m.Stored, m.StoreRetries, m.AcksPending, m.ControlMessages.vec, m.ControlSubscriptions}
}

// Fanout is the fanout tier's metrics.
type Fanout struct {
	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	Subscriptions    prometheus.Gauge
	MessagesIn       prometheus.Counter
	Deliveries       prometheus.Counter
	BytesOut         prometheus.Counter
	Refused          *ReasonCounter[FanoutRefusal]    // upgrade refusals
	Disconnects      *ReasonCounter[FanoutDisconnect] // client closes
	SlowConsumers    *ReasonCounter[SlowConsumerKind]
	AuthRefused      *ReasonCounter[AuthRefusal] // relay_auth_refused_total{tier="fanout"}
	Replays          *ReasonCounter[ReplaySource]
	CatchUps         prometheus.Counter
	Gaps             prometheus.Counter
	// Talking back.
	ControlMessages  prometheus.Counter // client control messages published
	ControlThrottled prometheus.Counter // pauses for RELAY_FANOUT_CONTROL_RATE
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
		Refused: newReasonCounter(prometheus.CounterOpts{Name: "relay_fanout_refused_total"},
			"reason", "WebSocket upgrades refused,", FanoutRefusals()),
		Disconnects: newReasonCounter(prometheus.CounterOpts{Name: "relay_fanout_disconnects_total"},
			"reason", "WebSocket clients closed,", FanoutDisconnects()),
		SlowConsumers: newReasonCounter(prometheus.CounterOpts{Name: "relay_fanout_slow_consumers_total"},
			"kind", "Slow-consumer events (client: a WebSocket client's queue was full; nats: NATS dropped messages for a subscription),", SlowConsumerKinds()),
		AuthRefused: newAuthRefused("fanout"),
		Replays: newReasonCounter(prometheus.CounterOpts{Name: "relay_fanout_replays_total"},
			"source", "Durable channels: replays served to a client (a resume, or a catch-up after falling behind; one that moves from the stream to the ring counts once in each),", ReplaySources()),
		CatchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_catchups_total", Help: "Durable channels: clients that fell behind and were switched to catching up from the ring or the stream instead of being cut.",
		}),
		Gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_gaps_total", Help: "Durable channels: resumes whose point was no longer stored (a gap event, or 4410 for a plain client).",
		}),
		ControlMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_control_messages_total", Help: "Control messages WebSocket clients sent, published to <prefix>.ctl.<channel> for the channel's TCP senders.",
		}),
		ControlThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_fanout_control_throttled_total", Help: "Times a WebSocket client over RELAY_FANOUT_CONTROL_RATE was read more slowly (paused before its next frame; nothing dropped).",
		}),
	}
}

func (m *Fanout) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.ConnectionsTotal, m.Subscriptions, m.MessagesIn, m.Deliveries, m.BytesOut, m.Refused.vec, m.Disconnects.vec, m.SlowConsumers.vec, m.AuthRefused.vec, m.Replays.vec, m.CatchUps, m.Gaps, m.ControlMessages, m.ControlThrottled}
}
