package netguard

import (
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the peers whose forwarding headers are believed.
type Proxies []netip.Prefix

// Trusted reports whether peer is one of the proxies.
func (p Proxies) Trusted(peer netip.Addr) bool { return Contains(p, peer) }

// ClientAddr returns the client's address for a request that arrived from
// peer. Only a trusted peer's Forwarded (RFC 7239) or X-Forwarded-For header
// is read, and from the right: each trusted hop may have appended the
// address it saw, so the rightmost address that is not itself a trusted
// proxy is the client. Anything to the left of it was written by the client
// and could be forged. Forwarded is preferred when present; an entry that
// does not parse (an obfuscated node, "unknown") stops the walk at the hop
// before it.
func (p Proxies) ClientAddr(peer netip.Addr, h http.Header) netip.Addr {
	peer = peer.Unmap()
	if len(p) == 0 || !p.Trusted(peer) {
		return peer
	}
	hops := forwardedFor(h)
	if hops == nil {
		hops = xForwardedFor(h)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return client
		}
		client = a
		if !p.Trusted(a) {
			return a
		}
	}
	return client
}

// Scheme returns "https" or "http": the scheme the client used, which a
// trusted proxy states in Forwarded proto= or X-Forwarded-Proto; otherwise
// whether this connection is TLS.
func (p Proxies) Scheme(peer netip.Addr, r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if len(p) == 0 || !p.Trusted(peer) {
		return scheme
	}
	proto := ""
	for _, v := range r.Header.Values("Forwarded") {
		for elem := range strings.SplitSeq(v, ",") {
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "proto") {
					proto = strings.Trim(val, `"`) // the last hop's word counts
				}
			}
		}
	}
	if proto == "" {
		if v := r.Header.Values("X-Forwarded-Proto"); len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			proto = strings.TrimSpace(parts[len(parts)-1])
		}
	}
	switch strings.ToLower(proto) {
	case "https", "wss":
		return "https"
	case "http", "ws":
		return "http"
	}
	return scheme
}

// forwardedFor lists the for= values of every Forwarded header, in order;
// nil when there is no Forwarded header.
func forwardedFor(h http.Header) []string {
	vs := h.Values("Forwarded")
	if len(vs) == 0 {
		return nil
	}
	out := []string{}
	for _, v := range vs {
		for elem := range strings.SplitSeq(v, ",") {
			hop := "" // an element without for= is a hop we cannot place
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "for") {
					hop = val
				}
			}
			out = append(out, hop)
		}
	}
	return out
}

func xForwardedFor(h http.Header) []string {
	var out []string
	for _, v := range h.Values("X-Forwarded-For") {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// parseHop reads one hop: 192.0.2.7, 192.0.2.7:4711, 2001:db8::1,
// [2001:db8::1]:4711, or the same quoted (Forwarded).
func parseHop(s string) (netip.Addr, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}
