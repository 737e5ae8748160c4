package netguard

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyHeaderTimeout bounds the wait for a PROXY protocol header: a peer
// that connects and sends nothing must not hold a connection slot.
const ProxyHeaderTimeout = 3 * time.Second

// Errors of a PROXY protocol connection (from the first Read or RemoteAddr).
var (
	// ErrNoProxyHeader: a trusted peer sent no PROXY header within the deadline.
	ErrNoProxyHeader = proxyproto.ErrNoProxyProtocol
	// ErrUntrustedProxyHeader: a peer outside the trusted CIDRs sent a PROXY header.
	ErrUntrustedProxyHeader = proxyproto.ErrSuperfluousProxyHeader
)

// IsProxyError reports whether err is a PROXY protocol failure (missing,
// malformed or untrusted header) rather than a network error.
func IsProxyError(err error) bool {
	for _, e := range proxyErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var proxyErrors = []error{
	proxyproto.ErrNoProxyProtocol, proxyproto.ErrSuperfluousProxyHeader, proxyproto.ErrCantReadVersion1Header,
	proxyproto.ErrVersion1HeaderTooLong, proxyproto.ErrLineMustEndWithCrlf, proxyproto.ErrCantReadProtocolVersionAndCommand,
	proxyproto.ErrCantReadAddressFamilyAndProtocol, proxyproto.ErrCantReadLength, proxyproto.ErrCantResolveSourceUnixAddress,
	proxyproto.ErrCantResolveDestinationUnixAddress, proxyproto.ErrUnknownProxyProtocolVersion,
	proxyproto.ErrUnsupportedProtocolVersionAndCommand, proxyproto.ErrUnsupportedAddressFamilyAndProtocol,
	proxyproto.ErrInvalidLength, proxyproto.ErrInvalidAddress, proxyproto.ErrInvalidPortNumber,
	proxyproto.ErrTruncatedTLV, proxyproto.ErrMalformedTLV, proxyproto.ErrIncompatibleTLV,
}

// RequireProxy wraps a connection that must start with a PROXY protocol
// v1 or v2 header when it comes from a trusted peer. The header is read on
// the first Read (or RemoteAddr) within ProxyHeaderTimeout; then RemoteAddr
// is the client the header names. A peer outside trusted is served as
// itself, and refused (ErrUntrustedProxyHeader) if it sends a header: a
// header is a claim only a trusted proxy may make.
func RequireProxy(c net.Conn, trusted []netip.Prefix) net.Conn {
	policy := proxyproto.REJECT
	if Contains(trusted, AddrOf(c.RemoteAddr())) {
		policy = proxyproto.REQUIRE
	}
	return proxyproto.NewConn(c, proxyproto.WithPolicy(policy), proxyproto.SetReadHeaderTimeout(ProxyHeaderTimeout))
}

// ProxyListener wraps ln so that connections from trusted peers may start
// with a PROXY protocol header (used when present, within
// ProxyHeaderTimeout); other peers are served as they are, untouched, and a
// header they send is just bytes the protocol above refuses.
func ProxyListener(ln net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener: ln,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if Contains(trusted, AddrOf(o.Upstream)) {
				return proxyproto.USE, nil
			}
			return proxyproto.SKIP, nil
		},
		ReadHeaderTimeout: ProxyHeaderTimeout,
	}
}
