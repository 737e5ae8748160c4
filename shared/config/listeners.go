package config

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/relaydev/relay/shared/subjects"
)

// Framing names how a sender's byte stream is cut into messages.
type Framing string

// Framings, as written in RELAY_INGEST_LISTENERS.
const (
	FramingLine  Framing = "line"  // each \n-terminated line is a message (text frames)
	FramingRaw   Framing = "raw"   // bytes as they arrive, up to the max size (binary frames)
	FramingLen32 Framing = "len32" // 4-byte big-endian length, then payload (binary frames)
)

// HandshakeChannel in a listener spec means the sender names its channel in
// its first line.
const HandshakeChannel = "*"

// Listener is one parsed ADDR=CHANNEL/FRAMING[;OPTION]… entry.
type Listener struct {
	Addr    string
	Channel string // a channel name, or HandshakeChannel
	Framing Framing

	// TLS (option `tls`, implied by `mtls`): senders speak TLS with the
	// certificate of RELAY_INGEST_TLS_CERT_FILE/_KEY_FILE.
	TLS bool
	// MTLS (option `mtls`): senders must also present a certificate signed by
	// RELAY_INGEST_TLS_CLIENT_CA_FILE.
	MTLS bool
	// Allow (option `allow=CIDR|CIDR…`): when not empty, only client addresses
	// inside one of these prefixes may connect.
	Allow []netip.Prefix
	// Deny (option `deny=CIDR|…`): client addresses inside these prefixes are
	// refused, even when Allow admits them.
	Deny []netip.Prefix
	// Proxy (option `proxy`): every connection starts with a PROXY protocol
	// v1/v2 header, believed only from RELAY_INGEST_PROXY_TRUSTED peers.
	Proxy bool
	// Public (option `public`): no token is needed here even with RELAY_AUTH=jwt.
	Public bool
	// Idle (option `idle=DURATION`): a connection that sends nothing for this
	// long is closed. Zero: no idle timeout.
	Idle time.Duration
}

// Handshake reports whether senders name their channel in a first line.
func (l Listener) Handshake() bool { return l.Channel == HandshakeChannel }

// String is the entry in canonical form; ParseListeners reads it back to an
// equal Listener.
func (l Listener) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s/%s", l.Addr, l.Channel, l.Framing)
	switch {
	case l.MTLS:
		b.WriteString(";mtls")
	case l.TLS:
		b.WriteString(";tls")
	}
	if len(l.Allow) > 0 {
		b.WriteString(";allow=" + joinPrefixes(l.Allow))
	}
	if len(l.Deny) > 0 {
		b.WriteString(";deny=" + joinPrefixes(l.Deny))
	}
	if l.Proxy {
		b.WriteString(";proxy")
	}
	if l.Public {
		b.WriteString(";public")
	}
	if l.Idle > 0 {
		b.WriteString(";idle=" + l.Idle.String())
	}
	return b.String()
}

// Equal reports whether two listeners have the same address, channel,
// framing and options.
func (l Listener) Equal(o Listener) bool {
	return l.Addr == o.Addr && l.Channel == o.Channel && l.Framing == o.Framing &&
		l.TLS == o.TLS && l.MTLS == o.MTLS && l.Proxy == o.Proxy && l.Public == o.Public && l.Idle == o.Idle &&
		slices.Equal(l.Allow, o.Allow) && slices.Equal(l.Deny, o.Deny)
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "|")
}

// Listeners is RELAY_INGEST_LISTENERS, parsed once, by Load: the tiers and
// the logs use the result, never the spec again.
type Listeners []Listener

// Decode parses a spec for envconfig.
func (ls *Listeners) Decode(spec string) error {
	parsed, err := ParseListeners(spec)
	if err != nil {
		return listenerErrors{err}
	}
	*ls = parsed
	return nil
}

// String gives the spec back: ADDR=CHANNEL/FRAMING, comma-separated.
func (ls Listeners) String() string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = l.String()
	}
	return strings.Join(s, ",")
}

// MustParseListeners parses a spec known to be good (tests, fixed specs);
// it panics on a bad one.
func MustParseListeners(spec string) Listeners {
	ls, err := ParseListeners(spec)
	if err != nil {
		panic(err)
	}
	return ls
}

// listenerErrors carries ParseListeners' errors, which already name the
// variable and each bad entry.
type listenerErrors struct{ error }

func (e listenerErrors) Unwrap() error { return e.error }

// ParseListeners parses a comma-separated list of ADDR=CHANNEL/FRAMING[;OPTION]….
func ParseListeners(spec string) ([]Listener, error) {
	var out []Listener
	var errs []error
	seen := map[string]bool{}
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		l, err := parseListener(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("RELAY_INGEST_LISTENERS: %q: %w", entry, err))
			continue
		}
		if seen[l.Addr] && !strings.HasSuffix(l.Addr, ":0") {
			errs = append(errs, fmt.Errorf("RELAY_INGEST_LISTENERS: address %s used twice", l.Addr))
			continue
		}
		seen[l.Addr] = true
		out = append(out, l)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("RELAY_INGEST_LISTENERS: no listeners"))
	}
	return out, errors.Join(errs...)
}

func parseListener(entry string) (Listener, error) {
	addr, rest, ok := strings.Cut(entry, "=")
	if !ok {
		return Listener{}, errors.New("want ADDR=CHANNEL/FRAMING[;OPTION]…, e.g. :7070=default/line")
	}
	rest, opts, hasOpts := strings.Cut(rest, ";")
	ch, framing, ok := strings.Cut(rest, "/")
	if !ok {
		return Listener{}, errors.New("missing /FRAMING (line, raw or len32)")
	}
	if err := checkAddr(addr); err != nil {
		return Listener{}, fmt.Errorf("address: %w", err)
	}
	if ch != HandshakeChannel {
		if err := subjects.ValidateChannel(ch); err != nil {
			return Listener{}, err
		}
	}
	l := Listener{Addr: addr, Channel: ch, Framing: Framing(framing)}
	switch l.Framing {
	case FramingLine, FramingRaw, FramingLen32:
	default:
		return Listener{}, fmt.Errorf("framing %q: must be line, raw or len32", framing)
	}
	if hasOpts {
		if err := l.parseOptions(opts); err != nil {
			return Listener{}, err
		}
	}
	return l, nil
}

// listenerOptions names every option, for error messages.
const listenerOptions = "tls, mtls, allow=CIDR|…, deny=CIDR|…, proxy, public, idle=DURATION"

func (l *Listener) parseOptions(opts string) error {
	seen := map[string]bool{}
	for _, opt := range strings.Split(opts, ";") {
		name, value, hasValue := strings.Cut(opt, "=")
		if name == "" {
			return fmt.Errorf("empty option (options are %s)", listenerOptions)
		}
		if seen[name] {
			return fmt.Errorf("option %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "tls", "mtls", "proxy", "public":
			if hasValue {
				return fmt.Errorf("option %s takes no value", name)
			}
		case "allow", "deny", "idle":
			if value == "" {
				return fmt.Errorf("option %s needs a value, e.g. %s", name, map[string]string{
					"allow": "allow=10.0.0.0/8|192.168.1.7", "deny": "deny=10.1.0.0/16", "idle": "idle=5m"}[name])
			}
		default:
			return fmt.Errorf("unknown option %q (options are %s)", opt, listenerOptions)
		}
		var err error
		switch name {
		case "tls":
			l.TLS = true
		case "mtls":
			l.TLS, l.MTLS = true, true
		case "proxy":
			l.Proxy = true
		case "public":
			l.Public = true
		case "allow":
			l.Allow, err = ParseCIDRs(value, "|")
		case "deny":
			l.Deny, err = ParseCIDRs(value, "|")
		case "idle":
			l.Idle, err = time.ParseDuration(value)
			if err == nil && l.Idle <= 0 {
				err = fmt.Errorf("%s must be positive", value)
			}
		}
		if err != nil {
			return fmt.Errorf("option %s: %w", name, err)
		}
	}
	if seen["tls"] && seen["mtls"] {
		return errors.New("options tls and mtls: give one (mtls is TLS with client certificates)")
	}
	return nil
}

// ParseCIDRs parses a list of CIDR prefixes (10.0.0.0/8, 2001:db8::/32) or
// single addresses (192.168.1.7 means 192.168.1.7/32) separated by sep.
// Prefixes are stored masked (10.1.2.3/8 is 10.0.0.0/8), IPv4-mapped IPv6
// as IPv4, so they compare and print in one form. Empty entries are errors;
// an empty list gives nil.
func ParseCIDRs(list, sep string) ([]netip.Prefix, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	var errs []error
	for _, s := range strings.Split(list, sep) {
		s = strings.TrimSpace(s)
		p, err := parseCIDR(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func parseCIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("empty CIDR")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR like 10.0.0.0/8 or an IP address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR like 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if a := p.Addr(); a.Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least /96", s)
		}
		p = netip.PrefixFrom(a.Unmap(), bits)
	}
	return p.Masked(), nil
}
