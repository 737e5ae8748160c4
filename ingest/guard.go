package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/netguard"
)

// Refusal reasons of the network controls (relay_ingest_refused_total).
const (
	reasonDenied        = metrics.IngestDenied
	reasonRateLimited   = metrics.IngestRateLimited
	reasonTooManyFromIP = metrics.IngestTooManyFromIP
	reasonProxyHeader   = metrics.IngestProxyHeader
	reasonTLSHandshake  = metrics.IngestTLSHandshake
	reasonIdleTimeout   = metrics.IngestIdleTimeout
)

// Replies of the network controls.
const (
	replyRateLimited     = "rate limited"
	replyDenied          = "address not allowed"
	replyIdleTimeoutTmpl = "idle timeout: nothing received for %s"
)

// guard is the ingest edge's network controls, shared by every listener.
type guard struct {
	limiter      *netguard.Limiter
	proxyTrusted []netip.Prefix
	tls          *tls.Config // nil without tls/mtls listeners
	mtls         *tls.Config // requires client certificates; nil without mtls listeners
}

func newGuard(cfg config.Ingest, specs []config.Listener, s *Server) (*guard, error) {
	r := cfg.IngestConnectRate()
	g := &guard{
		limiter: netguard.NewLimiter(netguard.Limits{
			MaxConns: cfg.MaxConnectionsPerIP,
			Rate:     netguard.Rate{N: r.N, Per: r.Per},
		}),
		proxyTrusted: cfg.ProxyTrustedCIDRs(),
	}
	if cfg.MaxConnectionsPerIP == 0 || cfg.MaxConnectionsPerIP >= cfg.MaxConnections {
		s.log.Warn("one client address can hold every sender slot: set RELAY_INGEST_MAX_CONNECTIONS_PER_IP below RELAY_INGEST_MAX_CONNECTIONS",
			"per_ip", cfg.MaxConnectionsPerIP, "max", cfg.MaxConnections)
	}
	for _, l := range specs {
		var err error
		switch {
		case l.MTLS && g.mtls == nil:
			g.mtls, err = netguard.ServerConfig(netguard.TLSFiles{
				CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
				ClientCAFile: cfg.TLSClientCAFile, RequireClientCert: true,
			}, s.log)
		case l.TLS && !l.MTLS && g.tls == nil:
			g.tls, err = netguard.ServerConfig(netguard.TLSFiles{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile}, s.log)
		}
		if err != nil {
			return nil, fmt.Errorf("ingest: listener %s: %w", l.Addr, err)
		}
		if g.tls != nil {
			g.tls.NextProtos = nil // not HTTP
		}
		if g.mtls != nil {
			g.mtls.NextProtos = nil
		}
	}
	return g, nil
}

// admit applies the listener's allow/deny rules and the per-address limits
// to the client at addr. On refusal it answers the sender, counts, logs and
// closes nc, and returns ok=false.
func (s *Server) admit(nc net.Conn, spec config.Listener, addr netip.Addr) (release func(), ok bool) {
	refuse := s.refuse
	if spec.TLS {
		// Before the TLS handshake a -ERR line would reach the sender as
		// garbage, and a handshake per refused connection is what a flood
		// wants us to spend: close without a word (counted and logged).
		refuse = s.refuseClose
	}
	if !(netguard.Rules{Allow: spec.Allow, Deny: spec.Deny}).Permit(addr) {
		refuse(nc, reasonDenied, replyDenied)
		return nil, false
	}
	release, err := s.guard.limiter.Acquire(addr)
	switch {
	case errors.Is(err, netguard.ErrRateLimited):
		refuse(nc, reasonRateLimited, replyRateLimited)
		return nil, false
	case errors.Is(err, netguard.ErrTooManyFromAddr):
		refuse(nc, reasonTooManyFromIP, replyRateLimited)
		return nil, false
	}
	return release, true
}

// secure runs the steps before the sender's first byte: the PROXY header
// (;proxy listeners), the address rules and limits for the client it names,
// then the TLS handshake (;tls, ;mtls). It returns the connection to read
// from, or an error after it has answered and counted the refusal.
func (c *senderConn) secure() error {
	s := c.s
	if c.spec.Proxy {
		pc := netguard.RequireProxy(c.raw, s.guard.proxyTrusted)
		c.setConn(pc)
		// A zero-length read makes the header be read (within its own
		// 3 s deadline) and reports what went wrong with it.
		if _, err := pc.Read(nil); err != nil {
			if c.isStopping() {
				return err
			}
			reason := "PROXY protocol header missing or malformed"
			if errors.Is(err, netguard.ErrUntrustedProxyHeader) {
				reason = "PROXY protocol header from an untrusted address"
			}
			c.setConn(c.raw) // the wrapper refuses writes after a bad header
			c.fail(reasonProxyHeader, err, reason)
			return err
		}
		c.remote = pc.RemoteAddr()
		release, ok := s.admit(pc, c.spec, netguard.AddrOf(c.remote))
		if !ok {
			return errRefused
		}
		c.release = release
	}
	if c.spec.TLS {
		cfg := s.guard.tls
		if c.spec.MTLS {
			cfg = s.guard.mtls
		}
		tc := tls.Server(c.conn, cfg)
		c.setConn(tc)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			// No -ERR: the peer does not speak our TLS, so it could not read it.
			s.m.Refused.Inc(reasonTLSHandshake)
			s.logRefusal(reasonTLSHandshake, "ingest: TLS handshake failed", "remote", c.remote.String(),
				"listener", c.spec.Addr, "err", err)
			return err
		}
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			c.peerName = certs[0].Subject.CommonName
		}
	}
	return nil
}

var errRefused = errors.New("ingest: refused")

// idleReader gives each read of an `idle=` listener's connection its own
// deadline once the handshake is done: a sender that sends nothing for that
// long is closed, one that trickles is not.
type idleReader struct {
	c    *senderConn
	idle time.Duration
	on   bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.on {
		r.c.setReadDeadline(time.Now().Add(r.idle))
	}
	return r.c.conn.Read(p)
}

// throttle holds the sender to RELAY_INGEST_MAX_RATE messages per second by
// waiting before it reads the next message: TCP flow control does the rest.
// A second's worth of messages may come in a burst.
func newThrottle(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond)))
}
