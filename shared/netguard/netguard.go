// Package netguard holds the network controls both tiers share: CIDR
// allow/deny rules, per-client-address connection caps and connect rates,
// the client address behind a proxy (PROXY protocol, X-Forwarded-For,
// Forwarded), and TLS configurations whose certificates are re-read when
// their files change. It knows nothing of NATS or of the tiers.
package netguard

import (
	"errors"
	"net"
	"net/netip"
)

// Sentinel errors: why a connection was refused.
var (
	// ErrDenied: the address is outside the allow rules or inside a deny rule.
	ErrDenied = errors.New("netguard: address not allowed")
	// ErrRateLimited: the address opened connections faster than its rate.
	ErrRateLimited = errors.New("netguard: connect rate exceeded")
	// ErrTooManyFromAddr: the address holds its maximum of open connections.
	ErrTooManyFromAddr = errors.New("netguard: too many connections from this address")
)

// Rules admit or refuse client addresses. Deny wins over Allow; an empty
// Allow admits every address Deny does not name.
type Rules struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
}

// Empty reports whether the rules admit every address.
func (r Rules) Empty() bool { return len(r.Allow) == 0 && len(r.Deny) == 0 }

// Permit reports whether a may connect. An invalid address (a Unix socket,
// an in-memory pipe) is admitted only when there are no rules at all.
func (r Rules) Permit(a netip.Addr) bool {
	if r.Empty() {
		return true
	}
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	if Contains(r.Deny, a) {
		return false
	}
	return len(r.Allow) == 0 || Contains(r.Allow, a)
}

// Contains reports whether a lies in one of ps.
func Contains(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// AddrOf returns the IP address of a network address (unmapped, without
// zone), or the zero Addr when it has none.
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// IsLoopbackListen reports whether a listen address (host:port) accepts
// connections from this machine only: a loopback IP or "localhost".
func IsLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
