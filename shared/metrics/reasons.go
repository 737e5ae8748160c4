package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons are typed so that the value a tier passes IS the label value
// Prometheus shows, and the help text of each counter is built from the same
// list: a reason cannot be emitted without being documented, nor documented
// without existing. TestReasonsAreListedExactly checks the lists against the
// constants declared here; TestTiersUseTypedReasons checks the tiers update
// the counters only through the typed methods below.
//
// To add a reason: declare the constant here, add it to its list, and use it.

// IngestRefusal is a value of relay_ingest_refused_total{reason}.
type IngestRefusal string

const (
	IngestBadHandshake       IngestRefusal = "bad_handshake"        // handshake line missing or malformed, bad channel name
	IngestHandshakeTimeout   IngestRefusal = "handshake_timeout"    // no handshake line in time
	IngestTooLarge           IngestRefusal = "too_large"            // a message over RELAY_INGEST_MAX_MESSAGE
	IngestTruncated          IngestRefusal = "truncated"            // a len32 frame cut short by the sender's close
	IngestTooManyConnections IngestRefusal = "too_many_connections" // over RELAY_INGEST_MAX_CONNECTIONS
	IngestPublishFailed      IngestRefusal = "publish_failed"       // NATS would not take a message
	IngestShutdown           IngestRefusal = "shutdown"             // closed or refused while draining
	IngestUpstream           IngestRefusal = "upstream_unavailable" // NATS unreachable for RELAY_INGEST_OUTAGE_HOLD

	IngestDenied        IngestRefusal = "denied"                      // outside the listener's allow=, or in its deny=
	IngestRateLimited   IngestRefusal = "rate_limited"                // over RELAY_INGEST_CONNECT_RATE_PER_IP
	IngestTooManyFromIP IngestRefusal = "too_many_connections_per_ip" // over RELAY_INGEST_MAX_CONNECTIONS_PER_IP
	IngestProxyHeader   IngestRefusal = "proxy_header"                // PROXY header missing, malformed, slow or untrusted
	IngestTLSHandshake  IngestRefusal = "tls_handshake"               // TLS handshake failed (no or bad client certificate, not TLS)
	IngestIdleTimeout   IngestRefusal = "idle_timeout"                // nothing received for the listener's idle=
	IngestStoreFailed   IngestRefusal = "store_failed"                // the durable channels' stream would not store a message after retries
	IngestAckNotDurable IngestRefusal = "ack_not_durable"             // +ack asked on a channel that is not durable

	IngestUnauthorized IngestRefusal = "unauthorized"  // no, bad or expired token at the handshake
	IngestForbidden    IngestRefusal = "forbidden"     // valid token, channel not permitted
	IngestTokenExpired IngestRefusal = "token_expired" // the token's exp ended a sending connection
)

// IngestRefusals lists every IngestRefusal, in the order the help text shows them.
func IngestRefusals() []IngestRefusal {
	return []IngestRefusal{IngestBadHandshake, IngestHandshakeTimeout, IngestTooLarge, IngestTruncated,
		IngestTooManyConnections, IngestPublishFailed, IngestShutdown, IngestUpstream,
		IngestDenied, IngestRateLimited, IngestTooManyFromIP, IngestProxyHeader, IngestTLSHandshake, IngestIdleTimeout,
		IngestUnauthorized, IngestForbidden, IngestTokenExpired,
		IngestStoreFailed, IngestAckNotDurable}
}

// IngestUnpublished is a value of relay_ingest_unpublished_total{reason}:
// why a message read from a sender was never published.
type IngestUnpublished string

const (
	UnpublishedUpstream      IngestUnpublished = "upstream_unavailable" // NATS unreachable for RELAY_INGEST_OUTAGE_HOLD
	UnpublishedShutdown      IngestUnpublished = "shutdown"             // still held at the shutdown deadline
	UnpublishedPublishFailed IngestUnpublished = "publish_failed"       // the NATS connection closed for good
)

// IngestUnpublishedReasons lists every IngestUnpublished, in the order the help text shows them.
func IngestUnpublishedReasons() []IngestUnpublished {
	return []IngestUnpublished{UnpublishedUpstream, UnpublishedShutdown, UnpublishedPublishFailed}
}

// FanoutRefusal is a value of relay_fanout_refused_total{reason}.
type FanoutRefusal string

const (
	FanoutBadChannel      FanoutRefusal = "bad_channel"          // channel name in the URL is invalid
	FanoutBadOrigin       FanoutRefusal = "bad_origin"           // Origin not allowed
	FanoutTooMany         FanoutRefusal = "too_many_connections" // over RELAY_FANOUT_MAX_CONNECTIONS
	FanoutDraining        FanoutRefusal = "draining"             // shutting down
	FanoutSubscribeFailed FanoutRefusal = "subscribe_failed"     // NATS subscription could not be made
	FanoutBadRequest      FanoutRefusal = "bad_request"          // not a WebSocket upgrade, or a bad one
	FanoutNATSDown        FanoutRefusal = "nats_disconnected"    // no NATS connection: upgraded, then closed 1012

	FanoutBadHost       FanoutRefusal = "bad_host"                    // Host not in RELAY_FANOUT_ALLOWED_HOSTS (DNS rebinding)
	FanoutDenied        FanoutRefusal = "denied"                      // client address outside the CIDR rules
	FanoutRateLimited   FanoutRefusal = "rate_limited"                // over RELAY_FANOUT_CONNECT_RATE_PER_IP (4429)
	FanoutTooManyFromIP FanoutRefusal = "too_many_connections_per_ip" // over RELAY_FANOUT_MAX_CONNECTIONS_PER_IP (4429)
	FanoutHeaderTimeout FanoutRefusal = "header_timeout"              // request headers not complete in time (slowloris)

	FanoutUnauthorized FanoutRefusal = "unauthorized" // no, bad or expired token (closed 4401 after the upgrade)
	FanoutForbidden    FanoutRefusal = "forbidden"    // valid token, channel not permitted (closed 4403)

	FanoutBadResume FanoutRefusal = "bad_resume" // bad ?since=/?last=/?since_time=, or one on a channel that is not durable (closed 4400)
)

// FanoutRefusals lists every FanoutRefusal, in the order the help text shows them.
func FanoutRefusals() []FanoutRefusal {
	return []FanoutRefusal{FanoutBadChannel, FanoutBadOrigin, FanoutTooMany, FanoutDraining,
		FanoutSubscribeFailed, FanoutBadRequest, FanoutNATSDown, FanoutBadHost, FanoutDenied, FanoutRateLimited, FanoutTooManyFromIP,
		FanoutHeaderTimeout, FanoutUnauthorized, FanoutForbidden, FanoutBadResume}
}

// FanoutDisconnect is a value of relay_fanout_disconnects_total{reason}.
type FanoutDisconnect string

const (
	DisconnectClientClosed     FanoutDisconnect = "client_closed"      // the client closed or went away
	DisconnectSlowConsumer     FanoutDisconnect = "slow_consumer"      // the client's queue overflowed (1008)
	DisconnectNATSSlowConsumer FanoutDisconnect = "nats_slow_consumer" // NATS dropped messages for its channel (1008)
	DisconnectClientData       FanoutDisconnect = "client_data"        // the client sent data (receive-only)
	DisconnectWriteError       FanoutDisconnect = "write_error"        // a write failed or timed out
	DisconnectPingTimeout      FanoutDisconnect = "ping_timeout"       // no pong in time
	DisconnectShutdown         FanoutDisconnect = "shutdown"           // server draining (1001)
	DisconnectNATSLost         FanoutDisconnect = "nats_disconnected"  // fanout lost NATS (1012)
	DisconnectTokenExpired     FanoutDisconnect = "token_expired"      // the token's exp passed (4401)
	DisconnectProtocolError    FanoutDisconnect = "protocol_error"     // the client broke RFC 6455 (1002)
	DisconnectResumeExpired    FanoutDisconnect = "resume_expired"     // a plain client's resume point is no longer stored (4410)
	DisconnectUpstreamRead     FanoutDisconnect = "stream_read_failed" // reading a durable channel's history from JetStream failed (1012)
	DisconnectControlTooLarge  FanoutDisconnect = "control_too_large"  // a control message over RELAY_FANOUT_CONTROL_MAX_MESSAGE (1009)
	DisconnectControlForbidden FanoutDisconnect = "control_forbidden"  // a control message without the control permission (4403)
	DisconnectControlFailed    FanoutDisconnect = "control_failed"     // a control message could not be published (1011)
)

// FanoutDisconnects lists every FanoutDisconnect, in the order the help text shows them.
func FanoutDisconnects() []FanoutDisconnect {
	return []FanoutDisconnect{DisconnectClientClosed, DisconnectSlowConsumer, DisconnectNATSSlowConsumer,
		DisconnectClientData, DisconnectWriteError, DisconnectPingTimeout, DisconnectShutdown, DisconnectNATSLost,
		DisconnectProtocolError, DisconnectTokenExpired, DisconnectResumeExpired, DisconnectUpstreamRead,
		DisconnectControlTooLarge, DisconnectControlForbidden, DisconnectControlFailed}
}

// ReplaySource is a value of relay_fanout_replays_total{source}: where a
// durable channel's client was served what it had not seen yet (a resume,
// or catching up after falling behind).
type ReplaySource string

const (
	ReplayRing   ReplaySource = "ring"   // from the fanout's in-memory ring (no JetStream request)
	ReplayStream ReplaySource = "stream" // from JetStream (a short-lived ordered consumer)
)

// ReplaySources lists every ReplaySource, in the order the help text shows them.
func ReplaySources() []ReplaySource { return []ReplaySource{ReplayRing, ReplayStream} }

// ControlResult is a value of relay_ingest_control_messages_total{result}:
// what became of a control message for one TCP sender.
type ControlResult string

const (
	ControlWritten ControlResult = "written" // written to the sender's socket
	ControlDropped ControlResult = "dropped" // the sender's queue was full (it does not read): the newest is dropped
)

// ControlResults lists every ControlResult, in the order the help text shows them.
func ControlResults() []ControlResult { return []ControlResult{ControlWritten, ControlDropped} }

// SlowConsumerKind is a value of relay_fanout_slow_consumers_total{kind}.
type SlowConsumerKind string

const (
	SlowClient SlowConsumerKind = "client" // a WebSocket client's queue was full
	SlowNATS   SlowConsumerKind = "nats"   // NATS dropped messages for a subscription
)

// SlowConsumerKinds lists every SlowConsumerKind, in the order the help text shows them.
func SlowConsumerKinds() []SlowConsumerKind { return []SlowConsumerKind{SlowClient, SlowNATS} }

// AuthRefusal is a value of relay_auth_refused_total{tier,reason}: the
// shared/auth reasons, on both tiers.
type AuthRefusal string

const (
	AuthMissing   AuthRefusal = "missing"   // no token where one is needed
	AuthInvalid   AuthRefusal = "invalid"   // malformed, bad signature, wrong alg/key/iss/aud, not yet valid
	AuthExpired   AuthRefusal = "expired"   // past exp at the handshake/upgrade, or a connection ended at exp
	AuthForbidden AuthRefusal = "forbidden" // valid token, channel not permitted
)

// AuthReason maps a shared/auth reason (auth.Reason, the same words) to its
// label value; anything unknown counts as invalid.
func AuthReason(reason string) AuthRefusal {
	for _, r := range AuthRefusals() {
		if string(r) == reason {
			return r
		}
	}
	return AuthInvalid
}

// AuthRefusals lists every AuthRefusal, in the order the help text shows them.
func AuthRefusals() []AuthRefusal {
	return []AuthRefusal{AuthMissing, AuthInvalid, AuthExpired, AuthForbidden}
}

// NATSEvent is a value of relay_nats_events_total{event}.
type NATSEvent string

const (
	NATSDisconnect NATSEvent = "disconnect" // the connection was lost (it reconnects on its own)
	NATSReconnect  NATSEvent = "reconnect"  // the connection is back
	NATSClosed     NATSEvent = "closed"     // the connection is closed for good
)

// NATSEventKinds lists every NATSEvent, in the order the help text shows them.
func NATSEventKinds() []NATSEvent { return []NATSEvent{NATSDisconnect, NATSReconnect, NATSClosed} }

// ReasonCounter counts events by a typed reason; the reason's value is the
// label value. It is the only way the tiers update a reason-labelled counter.
type ReasonCounter[T ~string] struct{ vec *prometheus.CounterVec }

// newReasonCounter returns a counter with a series for each of all, at 0
// until counted: a rate over a reason that has not happened yet is 0, not
// missing, and /metrics (and README's table) show every reason there is.
func newReasonCounter[T ~string](opts prometheus.CounterOpts, label, help string, all []T) *ReasonCounter[T] {
	opts.Help = help + " by " + label + " " + listing(all) + "."
	vec := prometheus.NewCounterVec(opts, []string{label})
	// Every reason is served from the start, at 0: Prometheus's increase()
	// and rate() need a sample before the first event to count it, so an
	// alert on a reason's first occurrence after a restart would miss it.
	for _, r := range all {
		vec.WithLabelValues(string(r))
	}
	return &ReasonCounter[T]{vec: vec}
}

// Inc counts one event for reason r.
func (c *ReasonCounter[T]) Inc(r T) { c.vec.WithLabelValues(string(r)).Inc() }

// With returns the counter for reason r (tests read it).
func (c *ReasonCounter[T]) With(r T) prometheus.Counter { return c.vec.WithLabelValues(string(r)) }

// listing renders reasons for a help text: "(a, b, c)".
func listing[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return "(" + strings.Join(s, ", ") + ")"
}
