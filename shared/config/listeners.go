package config

import (
	"errors"
	"fmt"
	"strings"

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

// Listener is one parsed ADDR=CHANNEL/FRAMING entry.
type Listener struct {
	Addr    string
	Channel string // a channel name, or HandshakeChannel
	Framing Framing
}

// Handshake reports whether senders name their channel in a first line.
func (l Listener) Handshake() bool { return l.Channel == HandshakeChannel }

func (l Listener) String() string { return fmt.Sprintf("%s=%s/%s", l.Addr, l.Channel, l.Framing) }

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

// ParseListeners parses a comma-separated list of ADDR=CHANNEL/FRAMING.
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
		return Listener{}, errors.New("want ADDR=CHANNEL/FRAMING, e.g. :7070=default/line")
	}
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
	switch f := Framing(framing); f {
	case FramingLine, FramingRaw, FramingLen32:
		return Listener{Addr: addr, Channel: ch, Framing: f}, nil
	default:
		return Listener{}, fmt.Errorf("framing %q: must be line, raw or len32", framing)
	}
}
