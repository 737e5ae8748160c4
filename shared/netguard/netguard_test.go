package netguard

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/testutil"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestRules(t *testing.T) {
	r := Rules{Allow: pfx("10.0.0.0/8", "2001:db8::/32"), Deny: pfx("10.1.0.0/16")}
	for addr, want := range map[string]bool{
		"10.2.3.4": true, "10.1.2.3": false, "192.168.1.1": false, "2001:db8::1": true,
		"::ffff:10.2.3.4": true, "::ffff:10.1.0.1": false, "2001:db9::1": false,
	} {
		if got := r.Permit(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Permit(%s) = %v, want %v", addr, got, want)
		}
	}
	if (Rules{}).Permit(netip.Addr{}) != true || r.Permit(netip.Addr{}) != false {
		t.Error("an address-less peer passes only when there are no rules")
	}
	if !(Rules{Deny: pfx("10.0.0.0/8")}).Permit(netip.MustParseAddr("11.0.0.1")) {
		t.Error("deny-only rules refused an address outside them")
	}
}

func TestLimiterCapAndRate(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	l := NewLimiter(Limits{MaxConns: 2})
	r1, err1 := l.Acquire(a)
	_, err2 := l.Acquire(a)
	if _, err := l.Acquire(a); err1 != nil || err2 != nil || !errors.Is(err, ErrTooManyFromAddr) {
		t.Fatalf("cap 2: %v %v %v", err1, err2, err)
	}
	r1()
	r1() // twice is harmless
	if _, err := l.Acquire(a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// IPv6 counts per /64.
	l6 := NewLimiter(Limits{MaxConns: 1})
	l6.Acquire(netip.MustParseAddr("2001:db8:1:2::1"))
	if _, err := l6.Acquire(netip.MustParseAddr("2001:db8:1:2::ffff")); !errors.Is(err, ErrTooManyFromAddr) {
		t.Fatalf("same /64: %v", err)
	}
	if _, err := l6.Acquire(netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Fatalf("other /64: %v", err)
	}
	lr := NewLimiter(Limits{Rate: Rate{N: 3, Per: time.Hour}})
	for i := range 3 {
		rel, err := lr.Acquire(a)
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		rel()
	}
	if _, err := lr.Acquire(a); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("4th connect in an hour at 3/1h: %v", err)
	}
}

// TestLimiterStateIsBounded: a spray from many addresses does not grow
// the table past MaxTracked (plus the addresses holding connections).
func TestLimiterStateIsBounded(t *testing.T) {
	l := NewLimiter(Limits{MaxConns: 5, Rate: Rate{N: 10, Per: time.Hour}, MaxTracked: 1000})
	var held []func()
	for i := range 50 { // these keep a connection open
		rel, err := l.Acquire(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rel)
	}
	for i := range 100_000 {
		rel, err := l.Acquire(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}))
		if err == nil {
			rel()
		}
		if n := l.Tracked(); n > 1000+50 {
			t.Fatalf("after %d addresses the limiter tracks %d", i, n)
		}
	}
	for i, rel := range held {
		if n := l.Conns(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})); n != 1 {
			t.Fatalf("an address with an open connection was forgotten (%d)", n)
		}
		rel()
	}
}

func TestClientAddr(t *testing.T) {
	proxies := Proxies(pfx("10.0.0.0/8"))
	peer := netip.MustParseAddr("10.0.0.5")
	tests := []struct {
		name   string
		peer   netip.Addr
		header http.Header
		want   string
	}{
		{"untrusted peer, header ignored", netip.MustParseAddr("198.51.100.1"), http.Header{"X-Forwarded-For": {"1.2.3.4"}}, "198.51.100.1"},
		{"trusted peer, no header", peer, nil, "10.0.0.5"},
		{"xff one hop", peer, http.Header{"X-Forwarded-For": {"203.0.113.9"}}, "203.0.113.9"},
		{"xff forged left part", peer, http.Header{"X-Forwarded-For": {"1.1.1.1, 203.0.113.9"}}, "203.0.113.9"},
		{"xff through two trusted", peer, http.Header{"X-Forwarded-For": {"203.0.113.9, 10.1.1.1"}}, "203.0.113.9"},
		{"xff split over headers", peer, http.Header{"X-Forwarded-For": {"1.1.1.1", "203.0.113.9,10.1.1.1"}}, "203.0.113.9"},
		{"xff garbage stops the walk", peer, http.Header{"X-Forwarded-For": {"203.0.113.9, garbage, 10.1.1.1"}}, "10.1.1.1"},
		{"xff all trusted", peer, http.Header{"X-Forwarded-For": {"10.9.9.9, 10.1.1.1"}}, "10.9.9.9"},
		{"xff with port", peer, http.Header{"X-Forwarded-For": {"203.0.113.9:4711"}}, "203.0.113.9"},
		{"forwarded ipv6", peer, http.Header{"Forwarded": {`for="[2001:db8::7]:4711";proto=https`}}, "2001:db8::7"},
		{"forwarded wins over xff", peer, http.Header{"Forwarded": {"for=203.0.113.1"}, "X-Forwarded-For": {"203.0.113.2"}}, "203.0.113.1"},
		{"forwarded obfuscated", peer, http.Header{"Forwarded": {"for=_hidden, for=203.0.113.3"}}, "203.0.113.3"},
		{"forwarded unknown last", peer, http.Header{"Forwarded": {"for=203.0.113.3, for=unknown"}}, "10.0.0.5"},
		{"mapped peer", netip.MustParseAddr("::ffff:10.0.0.5"), http.Header{"X-Forwarded-For": {"203.0.113.9"}}, "203.0.113.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxies.ClientAddr(tt.peer, tt.header); got != netip.MustParseAddr(tt.want) {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.9", "1.1.1.1, 10.0.0.1", `for="[::1]:80"`, "for=unknown;proto=https", "[", ",,,", "::ffff:1.2.3.4"} {
		f.Add(s, s)
	}
	proxies := Proxies(pfx("10.0.0.0/8"))
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		h := http.Header{"X-Forwarded-For": {xff}}
		if fwd != "" {
			h.Set("Forwarded", fwd)
		}
		got := proxies.ClientAddr(netip.MustParseAddr("10.0.0.1"), h)
		if !got.IsValid() || got.Is4In6() || got.Zone() != "" {
			t.Fatalf("ClientAddr(%q, %q) = %v", xff, fwd, got)
		}
		if got := proxies.ClientAddr(netip.MustParseAddr("192.0.2.1"), h); got != netip.MustParseAddr("192.0.2.1") {
			t.Fatalf("an untrusted peer's header was believed: %v", got)
		}
	})
}

// TestServerConfigReload: a new certificate is served after the files
// change; a broken rotation keeps the old one (and logs).
func TestServerConfigReload(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "ca")
	c1, k1 := ca.Issue(t, "one")
	certFile := testutil.WriteFile(t, dir, "c.pem", c1)
	keyFile := testutil.WriteFile(t, dir, "k.pem", k1)
	cfg, err := ServerConfig(TLSFiles{CertFile: certFile, KeyFile: keyFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Fatal("MinVersion below TLS 1.2")
	}
	cn := func() string {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if cn() != "one" {
		t.Fatal("first certificate not served")
	}
	os.WriteFile(certFile, []byte("not a certificate"), 0o600)
	past := time.Now().Add(-2 * time.Second)
	os.Chtimes(certFile, past, past)
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := cn(); got != "one" {
			return fmt.Errorf("served %s after a broken rotation", got)
		}
		return nil
	})
	c2, k2 := ca.Issue(t, "two")
	testutil.WriteFile(t, dir, "k.pem", k2)
	testutil.WriteFile(t, dir, "c.pem", c2)
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := cn(); got != "two" {
			return fmt.Errorf("still serving %s", got)
		}
		return nil
	})
	if _, err := ServerConfig(TLSFiles{CertFile: filepath.Join(dir, "missing"), KeyFile: keyFile}, nil); err == nil {
		t.Fatal("a missing certificate file did not fail the start")
	}
}
