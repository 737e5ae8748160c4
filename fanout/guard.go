package fanout

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/netguard"
)

// Refusal reasons of the network controls (Metrics.Refused).
const (
	refusedBadHost       = metrics.FanoutBadHost
	refusedDenied        = metrics.FanoutDenied
	refusedRateLimited   = metrics.FanoutRateLimited
	refusedTooManyFromIP = metrics.FanoutTooManyFromIP
	refusedHeaderTimeout = metrics.FanoutHeaderTimeout
)

// StatusRateLimited (4429) closes a WebSocket over a rate or connection
// limit: the client should back off, then reconnect.
const StatusRateLimited websocket.StatusCode = 4429

// guard is the fanout edge's network controls.
type guard struct {
	rules   netguard.Rules
	proxies netguard.Proxies
	limiter *netguard.Limiter
	hosts   []string // lower-cased Host patterns; nil = any host
	tls     *tls.Config
}

func newGuard(cfg config.Fanout, s *Server) (*guard, error) {
	r := cfg.FanoutConnectRate()
	g := &guard{
		rules:   netguard.Rules{Allow: cfg.AllowCIDRList(), Deny: cfg.DenyCIDRList()},
		proxies: netguard.Proxies(cfg.TrustedProxyList()),
		limiter: netguard.NewLimiter(netguard.Limits{
			MaxConns: cfg.MaxConnectionsPerIP,
			Rate:     netguard.Rate{N: r.N, Per: r.Per},
		}),
	}
	if cfg.MaxConnectionsPerIP == 0 || cfg.MaxConnectionsPerIP >= cfg.MaxConnections {
		s.log.Warn("one client address can hold every WebSocket slot: set RELAY_FANOUT_MAX_CONNECTIONS_PER_IP below RELAY_FANOUT_MAX_CONNECTIONS",
			"per_ip", cfg.MaxConnectionsPerIP, "max", cfg.MaxConnections)
	}
	for _, h := range cfg.AllowedHosts {
		g.hosts = append(g.hosts, strings.ToLower(strings.TrimSpace(h)))
	}
	if len(g.hosts) == 0 && netguard.IsLoopbackListen(cfg.Addr) {
		// Against DNS rebinding: a page on evil.example whose name now
		// resolves to 127.0.0.1 sends Host: evil.example. A loopback-only
		// listener has no business answering any name but its own.
		g.hosts = []string{"localhost", "*.localhost", loopbackHosts}
	}
	if cfg.TLSCertFile != "" {
		var err error
		if g.tls, err = netguard.ServerConfig(netguard.TLSFiles{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile}, s.log); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// loopbackHosts stands for every loopback IP literal in a host list.
const loopbackHosts = "(loopback addresses)"

// hostAllowed reports whether the Host header names this server.
func (g *guard) hostAllowed(host string) bool {
	if g.hosts == nil {
		return true
	}
	name := strings.ToLower(host)
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.Trim(name, "[]"), ".")
	for _, p := range g.hosts {
		if p == loopbackHosts {
			if a, err := netip.ParseAddr(name); err == nil && a.Unmap().IsLoopback() {
				return true
			}
			continue
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

type ctxKey struct{}

// clientInfo is what the guard learned about a request's client.
type clientInfo struct {
	addr   netip.Addr // the client: the peer, or who a trusted proxy names
	scheme string     // http or https, as the client sees the server
}

func clientOf(r *http.Request) clientInfo {
	if ci, ok := r.Context().Value(ctxKey{}).(clientInfo); ok {
		return ci
	}
	return clientInfo{addr: peerAddr(r), scheme: "http"}
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// wrap applies the Host check and the address rules to every request, and
// records the client's address and scheme for the handlers. Health checks
// are exempt: probes come from the node under whatever name it uses, not
// from the users the rules are about, and they reveal nothing.
func (g *guard) wrap(s *Server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		markServed(r)
		peer := peerAddr(r)
		ci := clientInfo{addr: g.proxies.ClientAddr(peer, r.Header), scheme: g.proxies.Scheme(peer, r)}
		health := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
		if !health && !g.hostAllowed(r.Host) {
			s.refuse(w, r, http.StatusForbidden, refusedBadHost, "host not allowed")
			return
		}
		if !health && !g.rules.Permit(ci.addr) {
			s.refuse(w, r, http.StatusForbidden, refusedDenied, "address not allowed")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ci)))
	})
}

// acquire takes a per-address slot for a WebSocket client. Over a limit it
// completes the upgrade and closes with 4429 at once: a browser cannot read
// the status of a refused upgrade and would retry blindly.
func (s *Server) acquire(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	release, err := s.guard.limiter.Acquire(clientOf(r).addr)
	if err == nil {
		return release, true
	}
	reason := refusedRateLimited
	if errors.Is(err, netguard.ErrTooManyFromAddr) {
		reason = refusedTooManyFromIP
	}
	s.refuseUpgraded(w, r, StatusRateLimited, reason, "rate limited")
	return nil, false
}

// refuseUpgraded completes the upgrade, closes with code and text, counts
// and logs the refusal.
func (s *Server) refuseUpgraded(w http.ResponseWriter, r *http.Request, code websocket.StatusCode, reason metrics.FanoutRefusal, text string) {
	s.m.Refused.Inc(reason)
	if n, ok := s.refusals.Allow(string(reason)); ok {
		s.log.Info("upgrade refused", "reason", reason, "code", int(code), "remote", clientOf(r).addr.String(),
			"path", r.URL.Path, "suppressed", n)
	}
	s.closeUpgraded(w, r, code, text)
}

// watchedConn notes whether a read hit its deadline and whether a request
// ever reached a handler, so that a connection net/http drops before its
// first request is complete (ReadHeaderTimeout: slowloris) can be counted
// and logged; net/http itself closes it without a word.
type watchedConn struct {
	net.Conn
	timedOut atomic.Bool
	served   atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut.Store(true)
	}
	return n, err
}

type watchListener struct{ net.Listener }

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: c}, nil
}

// inner finds the watchedConn under a TLS connection.
func inner(c net.Conn) *watchedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	wc, _ := c.(*watchedConn)
	return wc
}

type connKey struct{}

// connContext is http.Server.ConnContext: handlers find the watchedConn.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, inner(c))
}

// markServed records that a request on r's connection reached a handler.
func markServed(r *http.Request) {
	if wc, ok := r.Context().Value(connKey{}).(*watchedConn); ok && wc != nil {
		wc.served.Store(true)
	}
}

// connState is http.Server.ConnState: a connection that closes having timed
// out before any request reached a handler had slow headers (or a slow TLS
// handshake).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed {
		return
	}
	wc := inner(c)
	if wc == nil || !wc.timedOut.Load() || wc.served.Load() {
		return
	}
	s.m.Refused.Inc(refusedHeaderTimeout)
	if n, ok := s.refusals.Allow(string(refusedHeaderTimeout)); ok {
		s.log.Info("connection closed: request headers not received in time", "remote", wc.RemoteAddr().String(),
			"timeout", readHeaderTimeout.String(), "suppressed", n)
	}
}
