package config

import (
	"fmt"
	"net"
	"strings"
)

// boundAddr is an address a role binds, and the setting that names it.
type boundAddr struct {
	setting string // e.g. RELAY_FANOUT_ADDR=:8080
	host    string
	port    string
}

// bound lists the addresses role binds. Port 0 (any free port) and
// addresses that do not parse (reported elsewhere) are left out.
func (c Config) bound(role Role) []boundAddr {
	var out []boundAddr
	add := func(setting, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "0" {
			return
		}
		out = append(out, boundAddr{setting: setting, host: host, port: port})
	}
	if role == RoleAll || role == RoleIngest {
		for _, l := range c.Listeners {
			add("RELAY_INGEST_LISTENERS entry "+l.String(), l.Addr)
		}
		if c.Ingest.HTTPAddr != "" {
			add("RELAY_INGEST_HTTP_ADDR="+c.Ingest.HTTPAddr, c.Ingest.HTTPAddr)
		}
	}
	if role == RoleAll || role == RoleFanout {
		add("RELAY_FANOUT_ADDR="+c.Fanout.Addr, c.Fanout.Addr)
	}
	if role == RoleAll && c.EmbeddedListen != "" {
		add("RELAY_NATS_LISTEN="+c.EmbeddedListen, c.EmbeddedListen)
	}
	return out
}

// clashes reports every two addresses of role that could not both be bound:
// the same port on overlapping hosts. Said at start as a configuration
// error, not later as a bind failure.
func (c Config) clashes(role Role) []error {
	var errs []error
	as := c.bound(role)
	for i := range as {
		for _, b := range as[i+1:] {
			if as[i].port == b.port && hostsOverlap(as[i].host, b.host) {
				errs = append(errs, fmt.Errorf("%s and %s both listen on port %s: give each its own port", as[i].setting, b.setting, b.port))
			}
		}
	}
	return errs
}

// hostsOverlap reports whether binding one host's port would make binding
// the other's fail: a wildcard overlaps everything (an IPv4 wildcard every
// IPv4 address and name), localhost its loopback addresses, otherwise the
// same address.
func hostsOverlap(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if a == "" || b == "" || a == "::" || b == "::" {
		return true
	}
	if a == "0.0.0.0" || b == "0.0.0.0" {
		other := b
		if b == "0.0.0.0" {
			other = a
		}
		ip := net.ParseIP(other)
		return ip == nil || ip.To4() != nil
	}
	ips := func(h string) []net.IP {
		if h == "localhost" {
			return []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		if ip := net.ParseIP(h); ip != nil {
			return []net.IP{ip}
		}
		return nil
	}
	ia, ib := ips(a), ips(b)
	if ia == nil || ib == nil {
		return a == b // host names: the same name
	}
	for _, x := range ia {
		for _, y := range ib {
			if x.Equal(y) {
				return true
			}
		}
	}
	return false
}
