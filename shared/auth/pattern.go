package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/relaydev/relay/shared/subjects"
)

// ErrInvalidPattern is returned (wrapped with the reason) for a channel
// pattern that is not dot-joined tokens, each a channel token, `*`, or a
// final `>`.
var ErrInvalidPattern = errors.New("invalid channel pattern")

// ValidatePattern reports whether p is a channel pattern: channel tokens
// joined by `.`, where a token may also be `*` (exactly one token) and the
// last token may be `>` (one or more tokens), as in NATS subjects.
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	if len(p) > subjects.MaxChannelLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidPattern, subjects.MaxChannelLen)
	}
	rest := p
	for rest != "" {
		tok, after, more := strings.Cut(rest, ".")
		switch {
		case tok == "*":
		case tok == ">":
			if more {
				return fmt.Errorf("%w: %q: '>' must be the last token", ErrInvalidPattern, p)
			}
		default:
			if err := subjects.ValidateChannel(tok); err != nil {
				return fmt.Errorf("%w: %q: token %q: %s", ErrInvalidPattern, p, tok,
					strings.TrimPrefix(err.Error(), subjects.ErrInvalidChannel.Error()+": "))
			}
		}
		if more && after == "" {
			return fmt.Errorf("%w: %q: empty token (trailing dot)", ErrInvalidPattern, p)
		}
		rest = after
	}
	return nil
}

// Match reports whether channel matches pattern with NATS semantics: `*`
// matches exactly one token, a final `>` matches one or more tokens, any
// other token matches itself. Both are assumed valid (ValidatePattern,
// subjects.ValidateChannel); it walks them once and allocates nothing,
// because it runs on every handshake and upgrade.
func Match(pattern, channel string) bool {
	for {
		ptok, prest, pmore := strings.Cut(pattern, ".")
		if ptok == ">" {
			return channel != ""
		}
		if channel == "" {
			return false
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

// MatchAny reports whether channel matches one of patterns.
func MatchAny(patterns []string, channel string) bool {
	for _, p := range patterns {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

// ValidatePatterns checks every pattern and returns every problem joined.
func ValidatePatterns(patterns []string) error {
	var errs []error
	for _, p := range patterns {
		errs = append(errs, ValidatePattern(p))
	}
	return errors.Join(errs...)
}
