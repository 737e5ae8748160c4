package subjects

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidPattern is returned (wrapped with the reason) for a channel
// pattern that is not dot-joined tokens, each a channel token, `*` or a final `>`.
var ErrInvalidPattern = errors.New("invalid channel pattern")

// ValidatePattern reports whether p is a channel pattern: channel tokens
// joined by `.`, where a token may be `*` (exactly one token) and the last
// token may be `>` (one or more tokens), as in NATS subjects. Because a
// pattern appended to `<prefix>.ch.` is a NATS subject filter matching
// exactly the channels the pattern matches, a pattern can name a JetStream
// stream's subjects (shared/durable) as well as test a channel (MatchPattern).
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	if len(p) > MaxChannelLen {
		return fmt.Errorf("%w: %q: longer than %d bytes", ErrInvalidPattern, p, MaxChannelLen)
	}
	for rest, more := p, true; more; {
		var tok string
		tok, rest, more = strings.Cut(rest, ".")
		switch {
		case tok == "*":
		case tok == ">":
			if more {
				return fmt.Errorf("%w: %q: '>' must be the last token", ErrInvalidPattern, p)
			}
		default:
			if msg := validTokens(tok); msg != "" {
				return fmt.Errorf("%w: %q: %s", ErrInvalidPattern, p, msg)
			}
		}
	}
	return nil
}

// MatchPattern reports whether channel matches pattern with NATS semantics:
// `*` matches exactly one token, a final `>` one or more, any other token
// itself. Both must be valid (ValidatePattern, ValidateChannel).
func MatchPattern(pattern, channel string) bool {
	for {
		ptok, prest, pmore := strings.Cut(pattern, ".")
		if ptok == ">" {
			return channel != ""
		}
		ctok, crest, cmore := strings.Cut(channel, ".")
		if ptok != "*" && ptok != ctok {
			return false
		}
		if !pmore || !cmore {
			return pmore == cmore
		}
		pattern, channel = prest, crest
	}
}
