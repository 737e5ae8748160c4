// Package subjects maps relay channel names to NATS subjects and back, and
// validates both. It is the single place that knows the subject layout
// `<prefix>.ch.<channel>`, so ingest, fanout and external publishers agree.
package subjects

import (
	"errors"
	"fmt"
	"strings"
)

// MaxChannelLen is the longest channel name accepted, in bytes.
const MaxChannelLen = 128

// ErrInvalidChannel is returned (wrapped with the reason) for a channel name
// that is not dot-joined [A-Za-z0-9_-]+ tokens of at most MaxChannelLen bytes.
var ErrInvalidChannel = errors.New("invalid channel name")

// ErrInvalidPrefix is returned for a subject prefix that is not dot-joined
// [A-Za-z0-9_-]+ tokens.
var ErrInvalidPrefix = errors.New("invalid subject prefix")

// ValidateChannel reports whether name is a valid channel name. The error
// says what is wrong in words a sender can act on.
func ValidateChannel(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidChannel)
	}
	if len(name) > MaxChannelLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidChannel, MaxChannelLen)
	}
	if err := validTokens(name); err != "" {
		return fmt.Errorf("%w: %s", ErrInvalidChannel, err)
	}
	return nil
}

// ValidatePrefix reports whether prefix can start a subject.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPrefix)
	}
	if err := validTokens(prefix); err != "" {
		return fmt.Errorf("%w: %s", ErrInvalidPrefix, err)
	}
	return nil
}

// validTokens checks dot-joined non-empty tokens of [A-Za-z0-9_-]. NATS
// wildcards (*, >), spaces and control bytes are therefore impossible, so a
// channel can never subscribe to or publish on someone else's subjects.
func validTokens(s string) string {
	tokenLen := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if tokenLen == 0 {
				return "empty token (leading, trailing or double dot)"
			}
			tokenLen = 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			tokenLen++
		default:
			return fmt.Sprintf("character %q at byte %d not allowed (use A-Z a-z 0-9 _ - and . between tokens)", c, i)
		}
	}
	if tokenLen == 0 {
		return "empty token (leading, trailing or double dot)"
	}
	return ""
}

// Mapper turns channels into subjects for one prefix.
type Mapper struct {
	prefix string // "<prefix>.ch."
	root   string // "<prefix>."
}

// NewMapper returns a Mapper for prefix, which must pass ValidatePrefix.
func NewMapper(prefix string) (Mapper, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return Mapper{}, err
	}
	return Mapper{prefix: prefix + ".ch.", root: prefix + "."}, nil
}

// Subject returns the subject for a channel already validated.
func (m Mapper) Subject(channel string) string { return m.prefix + channel }

// Channel returns the channel a subject carries, and false when the subject
// is not one of this prefix's valid channel subjects.
func (m Mapper) Channel(subject string) (string, bool) {
	ch, ok := strings.CutPrefix(subject, m.prefix)
	if !ok || ValidateChannel(ch) != nil {
		return "", false
	}
	return ch, true
}

// ChannelPart returns what follows the prefix in subject, unchecked: the
// concrete channel of a message that reached a wildcard subscription (whose
// subjects all carry the prefix). Use Channel to validate.
func (m Mapper) ChannelPart(subject string) string {
	ch, _ := strings.CutPrefix(subject, m.prefix)
	return ch
}

// Wildcard returns the subject that matches every channel of this prefix.
func (m Mapper) Wildcard() string { return m.prefix + ">" }

// Talking back (docs/architecture.md): WebSocket clients' control messages
// for a channel's TCP senders travel on <prefix>.ctl.<channel>, and ingest
// announces the channel's senders (presence) on <prefix>.ev.<channel>.
const (
	controlToken = "ctl."
	eventToken   = "ev."
)

// ControlSubject returns the subject of control messages to channel's
// senders, for a channel already validated.
func (m Mapper) ControlSubject(channel string) string { return m.root + controlToken + channel }

// EventSubject returns the subject of channel's presence events, for a
// channel already validated.
func (m Mapper) EventSubject(channel string) string { return m.root + eventToken + channel }

// Presence is the JSON payload of a <prefix>.ev.<channel> event: one
// ingest pod's sender count for the channel. Counts are absolute, so a lost
// or repeated event does no lasting harm; a fanout sums the pods' counts
// and forgets a pod's count TTLMillis after its last event.
type Presence struct {
	Pod       string `json:"pod"`
	Senders   int    `json:"senders"`
	TTLMillis int64  `json:"ttl_ms"`
}

// PresenceQuery is the subject a fanout publishes to when it starts: every
// ingest answers with all its counts at once, so a fanout that has just
// started does not read 0 senders until the next periodic refresh. Its last
// token is not ev, so it is not one of the channels' event subjects.
func (m Mapper) PresenceQuery() string { return m.root + "evq" }

// EventWildcard matches the presence events of every channel.
func (m Mapper) EventWildcard() string { return m.root + eventToken + ">" }

// EventChannel returns the channel a presence event subject is about, and
// false when the subject is not one of this prefix's valid event subjects.
func (m Mapper) EventChannel(subject string) (string, bool) {
	ch, ok := strings.CutPrefix(subject, m.root+eventToken)
	if !ok || ValidateChannel(ch) != nil {
		return "", false
	}
	return ch, true
}

// FormatHeader is the NATS header with which a publisher says how a payload
// should travel to WebSocket clients: FormatText or FormatBinary. Without
// it, fanout sends valid UTF-8 as text and anything else as binary.
const (
	FormatHeader = "Relay-Format"
	FormatText   = "text"
	FormatBinary = "binary"
)
