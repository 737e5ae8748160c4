package fanout

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/wsframe"
)

// Refusal reasons: short local names for the typed label values of
// relay_fanout_refused_total{reason}, declared in shared/metrics.
const (
	refusedBadChannel      = metrics.FanoutBadChannel
	refusedBadOrigin       = metrics.FanoutBadOrigin
	refusedTooMany         = metrics.FanoutTooMany
	refusedDraining        = metrics.FanoutDraining
	refusedSubscribeFailed = metrics.FanoutSubscribeFailed
	refusedBadRequest      = metrics.FanoutBadRequest
	refusedNATSDown        = metrics.FanoutNATSDown
	refusedBadResume       = metrics.FanoutBadResume
)

// statusPatternResume (4400, bad request after the upgrade) closes a resume
// parameter on a wildcard watch, with reasonResumePattern. The durable
// channels' resume parsing refuses the same request with its own 4400; the
// check here comes first and needs no stream.
const (
	statusPatternResume websocket.StatusCode = 4400
	reasonResumePattern                      = "since/last/since_time need a single channel, not a pattern"
)

// resumeParams are the query parameters that resume a durable channel.
var resumeParams = []string{"since", "last", "since_time"}

// hasResume reports whether r asks to resume from a stream position.
func hasResume(r *http.Request) bool {
	q := r.URL.Query()
	for _, p := range resumeParams {
		if q.Has(p) {
			return true
		}
	}
	return false
}

// reasonNATSDown is the close reason of an upgrade refused while this
// fanout has no NATS connection (code 1012).
const reasonNATSDown = "upstream unavailable; retry later"

// acceptOptions: the Origin is checked by serveWS itself, so that a refusal
// is counted and logged; wsframe.Accept negotiates no compression, so the
// shared, encode-once frames go out as they are.
// The server selects relay.v1.json (the envelope) when the client offers
// it, else relay.v1 when offered (a client that sends its token as a
// relay.bearer. subprotocol must offer one of them too, and the token is
// never selected, so never echoed). wantsEnvelope must agree with this order.
var acceptOptions = &wsframe.AcceptOptions{Unwrap: unwatch, Subprotocols: []string{SubprotocolJSON, SubprotocolV1}}

// serveWS upgrades GET /ws/{channel}. Everything that can be refused is
// refused with a plain HTTP status before the upgrade; after the 101 the
// client is subscribed and gets every message published from then on.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	// A channel, or a pattern (sensors.*, sensors.>: NATS wildcards as
	// whole tokens) watched live through one subscription per pod. The
	// mux has unescaped the path, so a browser's %3E arrives as '>'.
	name := r.PathValue("channel")
	pattern, err := subjects.ValidateWatch(name)
	if err != nil {
		s.refuse(w, r, http.StatusBadRequest, refusedBadChannel, err.Error())
		return
	}
	if !s.originAllowed(r) {
		s.refuse(w, r, http.StatusForbidden, refusedBadOrigin, "origin not allowed")
		return
	}
	if s.health.Draining() {
		s.refuse(w, r, http.StatusServiceUnavailable, refusedDraining, "server is shutting down")
		return
	}
	if !isUpgrade(r) {
		// Accept answers with the precise status (426, 400, 405).
		s.m.Refused.Inc(refusedBadRequest)
		_, _ = s.accept(w, r)
		return
	}
	if pattern && hasResume(r) {
		// Resuming needs one stream position, and a pattern's channels
		// each have their own: wildcard watching is live-only.
		s.refuseUpgraded(w, r, statusPatternResume, refusedBadRequest, reasonResumePattern)
		return
	}
	if !s.nc.IsConnected() {
		// A browser cannot read an HTTP status (it sees 1006 and retries
		// blindly), so complete the upgrade and close at once with 1012.
		s.refuseUpgraded(w, r, websocket.StatusServiceRestart, refusedNATSDown, reasonNATSDown)
		return
	}
	if s.active.Add(1) > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		s.refuse(w, r, http.StatusServiceUnavailable, refusedTooMany, "too many connections")
		return
	}
	release, ok := s.acquire(w, r)
	if !ok {
		s.active.Add(-1)
		return
	}
	if !s.track() {
		release()
		s.active.Add(-1)
		s.refuse(w, r, http.StatusServiceUnavailable, refusedDraining, "server is shutting down")
		return
	}
	// Until the client is handed to its own goroutine, this handler owns
	// the slot and the tracking.
	handedOff := false
	defer func() {
		if !handedOff {
			release()
			s.wg.Done()
			s.active.Add(-1)
		}
	}()

	id, err := s.authorize(r, name)
	if err != nil {
		s.refuseAuth(w, r, err, name, id.Sub)
		return
	}
	rs, err := s.resumeOf(r, name)
	if err != nil {
		// After the upgrade, like every refusal a browser must be able to read.
		s.refuseUpgraded(w, r, StatusBadRequest, refusedBadResume, closeText(strings.TrimPrefix(err.Error(), "fanout: ")))
		return
	}
	// One With per client: each is a copy of the handler that an idle
	// connection keeps for its whole life.
	var log *slog.Logger
	if id.Sub != "" {
		log = s.log.With("channel", name, "remote", clientOf(r).addr.String(), "sub", id.Sub)
	} else {
		log = s.log.With("channel", name, "remote", clientOf(r).addr.String())
	}
	c := newClient(name, s.limits, s.m, log)
	c.talk = s.newTalk(name, id)
	if c.talk != nil {
		c.dataLimit = c.talk.readLimit()
	}
	c.envelope = wantsEnvelope(r)
	if s.hub.durable(name) {
		c.beDurable()
	}
	ch, err := s.hub.join(name, c)
	if err != nil {
		log.Warn("subscribe failed; upgrade refused", "err", err)
		s.refuseUpgraded(w, r, websocket.StatusServiceRestart, refusedSubscribeFailed, reasonNATSDown)
		return
	}
	if ch.durable {
		ch.position(c, rs)
	}

	// Registered before the 101 goes out: a shutdown or a NATS loss from
	// here on closes this client too (its close frame follows the 101), so
	// it can never be left connected across a gap it cannot see.
	if !s.register(c) {
		c.close(websocket.StatusGoingAway, reasonShutdown, disconnectShutdown)
	}
	conn, err := s.accept(w, r)
	if err != nil {
		s.unregister(c)
		s.hub.leave(ch, c)
		// Accept has answered the request (or the connection is gone).
		s.m.Refused.Inc(refusedBadRequest)
		log.Debug("upgrade failed", "err", err)
		return
	}
	c.attach(conn, s.pinger)
	s.greetSenders(c, name)
	if !id.Expires.IsZero() {
		c.expireAt(id.Expires)
	}
	s.m.ConnectionsTotal.Inc()
	s.m.Connections.Inc()
	log.Debug("client connected")
	handedOff = true
	// The connection is hijacked, so this handler may return: a fresh
	// goroutine serves the client with a shallow stack, and net/http's
	// goroutine, its grown stack and the request are freed. For a
	// connection that idles for hours that is most of its memory.
	go s.serveClient(c, ch, log, release)
}

// serveClient runs a connected client until it is closed, then releases
// what serveWS took for it. Its goroutine is the client's reader for the
// whole connection, so it keeps a small frame (what runs after the client
// is closed is in clientGone): an idle client's reader then fits in the
// 2 KiB stack a goroutine starts with.
func (s *Server) serveClient(c *client, ch *channel, log *slog.Logger, release func()) {
	start := time.Now()
	c.startCatchUp()
	c.serve()
	s.clientGone(c, ch, log, release, start)
}

// clientGone logs a client's end and releases what serveWS took for it.
//
//go:noinline
func (s *Server) clientGone(c *client, ch *channel, log *slog.Logger, release func(), start time.Time) {
	defer release()
	defer s.active.Add(-1)
	defer s.wg.Done()
	defer s.hub.leave(ch, c)
	defer s.m.Connections.Dec()
	defer s.unregister(c)

	reason, delivered, bytes := c.stats()
	log.Info("client disconnected", "reason", reason, "duration", time.Since(start).Round(time.Millisecond),
		"messages", delivered, "bytes", bytes)
}

// closeText cuts a close reason to the 123 bytes a close frame has room
// for, on a UTF-8 boundary.
func closeText(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// resumeOf reads the resume parameters of an upgrade (?since=, ?last=,
// ?since_time=): they apply to one durable channel, so on any other channel
// (or a pattern) they are a bad request.
func (s *Server) resumeOf(r *http.Request, name string) (resume, error) {
	rs, err := parseResume(r.URL.Query())
	if err != nil || rs.kind == resumeNone {
		return rs, err
	}
	if strings.ContainsAny(name, "*>") {
		return rs, fmt.Errorf("%w: since, last and since_time need one channel, not a pattern", errResume)
	}
	if !s.hub.durable(name) {
		return rs, fmt.Errorf("%w: %s is not a durable channel (RELAY_DURABLE_CHANNELS): it has no history to resume from", errResume, name)
	}
	return rs, nil
}

// originAllowed applies the same-origin rule (scheme and host:port equal to
// the request's, the scheme being https when the client reached us over TLS,
// directly or through a trusted proxy), or a host pattern from
// AllowedOrigins matched with path.Match (a pattern with "://" is matched
// against scheme://host), so a refusal can be counted and logged. A request
// without Origin is not from a browser and is allowed; "*" allows every
// origin. Same origin alone cannot stop DNS rebinding (there the page's
// Host and Origin are both the attacker's name): the Host check does.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(r.Host, u.Host) && strings.EqualFold(u.Scheme, clientOf(r).scheme) {
		return true
	}
	for _, p := range s.origins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(p, strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// isUpgrade reports whether r asks for a WebSocket at all, so that a plain
// GET does not cost a NATS subscription before Accept rejects it.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// refuse answers an upgrade with an HTTP error, counts it by reason and logs
// it, at most once per second per reason so a misbehaving page cannot flood
// the log.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, reason metrics.FanoutRefusal, msg string) {
	s.m.Refused.Inc(reason)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, status)
	if n, ok := s.refusals.Allow(string(reason)); ok {
		s.log.Info("upgrade refused", "reason", reason, "status", status, "remote", r.RemoteAddr,
			"origin", r.Header.Get("Origin"), "path", r.URL.Path, "suppressed", n)
	}
}
