package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseListenerOptions(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		entry string
		want  Listener
	}{
		{":1=a/line;tls", Listener{Addr: ":1", Channel: "a", Framing: FramingLine, TLS: true}},
		{":1=*/line;mtls", Listener{Addr: ":1", Channel: "*", Framing: FramingLine, TLS: true, MTLS: true}},
		{":1=a/raw;public;idle=90s", Listener{Addr: ":1", Channel: "a", Framing: FramingRaw, Public: true, Idle: 90 * time.Second}},
		{":1=a/len32;proxy", Listener{Addr: ":1", Channel: "a", Framing: FramingLen32, Proxy: true}},
		{":1=a/line;allow=10.0.0.0/8|192.168.1.7|2001:db8::/32", Listener{Addr: ":1", Channel: "a", Framing: FramingLine,
			Allow: pfx("10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32")}},
		// Prefixes are stored masked and IPv4-mapped ones as IPv4, so rules compare in one form.
		{":1=a/line;deny=10.1.2.3/16|::ffff:10.9.0.0/112", Listener{Addr: ":1", Channel: "a", Framing: FramingLine,
			Deny: pfx("10.1.0.0/16", "10.9.0.0/16")}},
		{"[::1]:1=a/line;allow=::1;deny=::1/128;idle=1m;public;proxy;tls", Listener{Addr: "[::1]:1", Channel: "a", Framing: FramingLine,
			Allow: pfx("::1/128"), Deny: pfx("::1/128"), Idle: time.Minute, Public: true, Proxy: true, TLS: true}},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			ls, err := ParseListeners(tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if !ls[0].Equal(tt.want) {
				t.Fatalf("got %+v\nwant %+v", ls[0], tt.want)
			}
			back, err := ParseListeners(ls[0].String())
			if err != nil || !back[0].Equal(ls[0]) {
				t.Fatalf("String() = %q does not read back: %v %+v", ls[0].String(), err, back)
			}
		})
	}
}

func TestParseListenerOptionErrors(t *testing.T) {
	tests := []struct{ entry, want string }{
		{":1=a/line;", "empty option"},
		{":1=a/line;;tls", "empty option"},
		{":1=a/line;TLS", `unknown option "TLS"`},
		{":1=a/line;quic", `unknown option "quic" (options are tls, mtls`},
		{":1=a/line;tls;tls", "option tls given twice"},
		{":1=a/line;tls;mtls", "give one"},
		{":1=a/line;tls=yes", "option tls takes no value"},
		{":1=a/line;allow", "option allow needs a value, e.g. allow=10.0.0.0/8"},
		{":1=a/line;allow=", "option allow needs a value"},
		{":1=a/line;allow=10.0.0.0/33", `option allow: "10.0.0.0/33" is not a CIDR`},
		{":1=a/line;deny=10.0.0.0/8||10.1.0.0/16", "option deny: empty CIDR"},
		{":1=a/line;deny=example.com", `"example.com" is not a CIDR like 10.0.0.0/8 or an IP address`},
		{":1=a/line;allow=fe80::1%eth0", "is not a CIDR"},
		{":1=a/line;deny=::ffff:0:0/8", "IPv4-mapped prefix needs at least /96"},
		{":1=a/line;idle=5", `option idle: time: missing unit in duration "5"`},
		{":1=a/line;idle=-1s", "option idle: -1s must be positive"},
		{":1=a/line;idle=0s", "must be positive"},
		{":1=a;tls", "missing /FRAMING"},
		{":1=a/line tls", `framing "line tls"`},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			_, err := ParseListeners(tt.entry)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseListeners(%q) = %v, want an error containing %q", tt.entry, err, tt.want)
			}
			if !strings.Contains(err.Error(), "RELAY_INGEST_LISTENERS") {
				t.Fatalf("error %q does not name the variable", err)
			}
		})
	}
}

func TestParseCIDRs(t *testing.T) {
	ps, err := ParseCIDRs(" 10.0.0.0/8 , 127.0.0.1,::1 ", ",")
	if err != nil || len(ps) != 3 || ps[1] != netip.MustParsePrefix("127.0.0.1/32") || ps[2] != netip.MustParsePrefix("::1/128") {
		t.Fatalf("got %v, %v", ps, err)
	}
	if ps, err := ParseCIDRs("  ", ","); ps != nil || err != nil {
		t.Fatalf("empty list: %v, %v", ps, err)
	}
	_, err = ParseCIDRs("x,10.0.0.0/8,y/3", ",")
	if err == nil || strings.Count(err.Error(), "is not a CIDR") != 2 {
		t.Fatalf("want both bad entries reported, got %v", err)
	}
}

// FuzzParseListeners: no input panics; whatever parses prints (String) to an
// entry that parses back to the same listener; options only come from the
// known set.
func FuzzParseListeners(f *testing.F) {
	for _, s := range []string{
		":7070=default/line", ":7071=*/len32;tls", "127.0.0.1:1=a.b/raw;mtls;allow=10.0.0.0/8|::1;deny=10.1.0.0/16",
		"[::1]:0=x/line;proxy;public;idle=1m30s", ":1=a/line;", ":1=a/line;allow=10.0.0.0/8||", ":1=a/line;idle=1ns",
		":1=a/line;deny=::ffff:10.0.0.0/104", ":1=a/line;tls,:2=b/raw;tls", "=/;=", ":1=a/line;allow=0.0.0.0/0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ls, err := ParseListeners(spec)
		if err != nil {
			return
		}
		for _, l := range ls {
			if l.MTLS && !l.TLS {
				t.Fatalf("%q: mtls without tls", spec)
			}
			if l.Idle < 0 {
				t.Fatalf("%q: negative idle", spec)
			}
			for _, p := range append(append([]netip.Prefix{}, l.Allow...), l.Deny...) {
				if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() {
					t.Fatalf("%q: prefix %v not valid, masked and unmapped", spec, p)
				}
			}
			back, err := ParseListeners(l.String())
			if err != nil || len(back) != 1 || !back[0].Equal(l) {
				t.Fatalf("%q: String() = %q reads back as %+v, %v", spec, l.String(), back, err)
			}
		}
	})
}
