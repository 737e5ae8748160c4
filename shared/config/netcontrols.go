package config

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Rate is N events per Per, written N/DURATION (10/1m). The zero Rate is
// no limit.
type Rate struct {
	N   int
	Per time.Duration
}

func (r Rate) String() string {
	if r.N == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// ParseRate reads N/DURATION; empty gives the zero Rate (no limit). A
// missing duration number means one unit: 10/s is 10/1s.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Rate{}, nil
	}
	ns, ds, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q: want N/DURATION, e.g. 10/1m", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(ns))
	if err != nil || n < 1 || n > 1<<20 {
		return Rate{}, fmt.Errorf("%q: N must be a whole number from 1 to %d", s, 1<<20)
	}
	ds = strings.TrimSpace(ds)
	if ds != "" && (ds[0] < '0' || ds[0] > '9') {
		ds = "1" + ds
	}
	d, err := time.ParseDuration(ds)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("%q: DURATION must be positive, like 1s or 1m", s)
	}
	return Rate{N: n, Per: d}, nil
}

// IngestConnectRate parses RELAY_INGEST_CONNECT_RATE_PER_IP.
func (i Ingest) IngestConnectRate() Rate { r, _ := ParseRate(i.ConnectRatePerIP); return r }

// ProxyTrustedCIDRs parses RELAY_INGEST_PROXY_TRUSTED.
func (i Ingest) ProxyTrustedCIDRs() []netip.Prefix { p, _ := ParseCIDRs(i.ProxyTrusted, ","); return p }

// FanoutConnectRate parses RELAY_FANOUT_CONNECT_RATE_PER_IP.
func (f Fanout) FanoutConnectRate() Rate { r, _ := ParseRate(f.ConnectRatePerIP); return r }

// AllowCIDRList parses RELAY_FANOUT_ALLOW_CIDRS.
func (f Fanout) AllowCIDRList() []netip.Prefix { p, _ := ParseCIDRs(f.AllowCIDRs, ","); return p }

// DenyCIDRList parses RELAY_FANOUT_DENY_CIDRS.
func (f Fanout) DenyCIDRList() []netip.Prefix { p, _ := ParseCIDRs(f.DenyCIDRs, ","); return p }

// TrustedProxyList parses RELAY_FANOUT_TRUSTED_PROXIES.
func (f Fanout) TrustedProxyList() []netip.Prefix {
	p, _ := ParseCIDRs(f.TrustedProxies, ",")
	return p
}

// validateNet checks the ingest tier's network controls.
func (i Ingest) validateNet() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if i.MaxConnectionsPerIP < 0 {
		add("RELAY_INGEST_MAX_CONNECTIONS_PER_IP=%d: must not be negative", i.MaxConnectionsPerIP)
	}
	if _, err := ParseRate(i.ConnectRatePerIP); err != nil {
		add("RELAY_INGEST_CONNECT_RATE_PER_IP: %v", err)
	}
	if i.MaxRate < 0 {
		add("RELAY_INGEST_MAX_RATE=%g: must not be negative", i.MaxRate)
	}
	trusted, err := ParseCIDRs(i.ProxyTrusted, ",")
	if err != nil {
		add("RELAY_INGEST_PROXY_TRUSTED: %v", err)
	}
	ls := i.Listeners
	var needTLS, needCA []string
	for _, l := range ls {
		if l.Proxy && len(trusted) == 0 && err == nil {
			add("RELAY_INGEST_LISTENERS: listener %s has option proxy but RELAY_INGEST_PROXY_TRUSTED is empty: name the proxies whose PROXY header to believe", l.Addr)
		}
		if l.TLS {
			needTLS = append(needTLS, l.Addr)
		}
		if l.MTLS {
			needCA = append(needCA, l.Addr)
		}
	}
	if len(needTLS) > 0 && (i.TLSCertFile == "" || i.TLSKeyFile == "") {
		add("RELAY_INGEST_TLS_CERT_FILE and RELAY_INGEST_TLS_KEY_FILE: needed by the tls/mtls listeners %s", strings.Join(needTLS, ", "))
	}
	if len(needCA) > 0 && i.TLSClientCAFile == "" {
		add("RELAY_INGEST_TLS_CLIENT_CA_FILE: needed by the mtls listeners %s", strings.Join(needCA, ", "))
	}
	errs = append(errs, checkFiles(map[string]string{
		"RELAY_INGEST_TLS_CERT_FILE": i.TLSCertFile, "RELAY_INGEST_TLS_KEY_FILE": i.TLSKeyFile,
		"RELAY_INGEST_TLS_CLIENT_CA_FILE": i.TLSClientCAFile,
	}))
	return errors.Join(errs...)
}

// validateNet checks the fanout tier's network controls.
func (f Fanout) validateNet() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if f.MaxConnectionsPerIP < 0 {
		add("RELAY_FANOUT_MAX_CONNECTIONS_PER_IP=%d: must not be negative", f.MaxConnectionsPerIP)
	}
	if _, err := ParseRate(f.ConnectRatePerIP); err != nil {
		add("RELAY_FANOUT_CONNECT_RATE_PER_IP: %v", err)
	}
	for name, v := range map[string]string{"RELAY_FANOUT_ALLOW_CIDRS": f.AllowCIDRs, "RELAY_FANOUT_DENY_CIDRS": f.DenyCIDRs, "RELAY_FANOUT_TRUSTED_PROXIES": f.TrustedProxies} {
		if _, err := ParseCIDRs(v, ","); err != nil {
			add("%s: %v", name, err)
		}
	}
	for _, h := range f.AllowedHosts {
		if _, err := path.Match(strings.ToLower(strings.TrimSpace(h)), ""); err != nil || strings.TrimSpace(h) == "" {
			add("RELAY_FANOUT_ALLOWED_HOSTS: %q is not a valid pattern", h)
		}
	}
	if (f.TLSCertFile == "") != (f.TLSKeyFile == "") {
		add("RELAY_FANOUT_TLS_CERT_FILE and RELAY_FANOUT_TLS_KEY_FILE: set both or neither")
	}
	errs = append(errs, checkFiles(map[string]string{"RELAY_FANOUT_TLS_CERT_FILE": f.TLSCertFile, "RELAY_FANOUT_TLS_KEY_FILE": f.TLSKeyFile}))
	return errors.Join(errs...)
}

// validateNet checks the admin address and the NATS credentials.
func (c Common) validateNet() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.AdminAddr != "" {
		if err := checkAddr(c.AdminAddr); err != nil {
			add("RELAY_ADMIN_ADDR=%q: %v", c.AdminAddr, err)
		}
	}
	if c.AdminPprof && c.AdminAddr == "" {
		add("RELAY_ADMIN_PPROF=true needs RELAY_ADMIN_ADDR: pprof is never served on a public port")
	}
	if (c.NATSUser == "") != (c.NATSPasswordFile == "") {
		add("RELAY_NATS_USER and RELAY_NATS_PASSWORD_FILE: set both or neither")
	}
	n := 0
	for _, v := range []string{c.NATSCredsFile, c.NATSNkeySeedFile, c.NATSUser, c.NATSTokenFile} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		add("NATS authentication: set only one of RELAY_NATS_CREDS_FILE, RELAY_NATS_NKEY_SEED_FILE, RELAY_NATS_USER (+_PASSWORD_FILE), RELAY_NATS_TOKEN_FILE")
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		add("RELAY_NATS_TLS_CERT_FILE and RELAY_NATS_TLS_KEY_FILE: set both or neither")
	}
	errs = append(errs, checkFiles(map[string]string{
		"RELAY_NATS_CREDS_FILE": c.NATSCredsFile, "RELAY_NATS_NKEY_SEED_FILE": c.NATSNkeySeedFile,
		"RELAY_NATS_PASSWORD_FILE": c.NATSPasswordFile, "RELAY_NATS_TOKEN_FILE": c.NATSTokenFile,
		"RELAY_NATS_TLS_CA_FILE": c.NATSTLSCAFile, "RELAY_NATS_TLS_CERT_FILE": c.NATSTLSCertFile, "RELAY_NATS_TLS_KEY_FILE": c.NATSTLSKeyFile,
	}))
	return errors.Join(errs...)
}

// checkFiles reports each named file that is set but cannot be read.
func checkFiles(files map[string]string) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if p := files[name]; p != "" {
			if f, err := os.Open(p); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, p, errors.Unwrap(err)))
			} else {
				f.Close()
			}
		}
	}
	return errors.Join(errs...)
}
