package auth

import (
	"errors"
	"strings"

	"github.com/relaydev/relay/shared/subjects"
)

// ErrInvalidPattern is returned (wrapped with the reason) for a channel
// pattern that is not dot-joined tokens, each a channel token, `*`, or a
// final `>`. It is subjects.ErrInvalidPattern: the grammar lives there.
var ErrInvalidPattern = subjects.ErrInvalidPattern

// ValidatePattern reports whether p is a channel pattern: channel tokens
// joined by `.`, where a token may also be `*` (exactly one token) and the
// last token may be `>` (one or more tokens), as in NATS subjects.
func ValidatePattern(p string) error { return subjects.ValidatePattern(p) }

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

// MatchAny reports whether channel matches one of patterns. channel may
// itself be a pattern (a wildcard watch): then one of patterns must cover it
// (Covers), so that a permission never reaches further than it was given.
func MatchAny(patterns []string, channel string) bool {
	if subjects.IsPattern(channel) {
		for _, p := range patterns {
			if Covers(p, channel) {
				return true
			}
		}
		return false
	}
	for _, p := range patterns {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

// Covers reports whether pattern outer matches every channel that pattern
// inner matches, with NATS semantics; both are assumed valid
// (ValidatePattern). A channel name is a pattern matching only itself, so
// Covers(p, channel) == Match(p, channel). Token by token: `>` in outer
// covers any non-empty rest of inner; `*` in outer covers one token of
// inner, literal or `*`; a literal covers only itself; `>` in inner (one or
// more tokens of anything) only by `>` in outer. Coverage by several
// patterns together (a.* and a.*.> together cover a.>) is not considered:
// a watch needs one pattern of the token that covers it, the safe side.
func Covers(outer, inner string) bool {
	for {
		otok, orest, omore := strings.Cut(outer, ".")
		if otok == ">" {
			return inner != ""
		}
		if inner == "" {
			return false
		}
		itok, irest, imore := strings.Cut(inner, ".")
		switch {
		case itok == ">":
			return false
		case otok == "*":
		case otok != itok:
			return false
		}
		if !omore || !imore {
			return omore == imore
		}
		outer, inner = orest, irest
	}
}

// ValidatePatterns checks every pattern and returns every problem joined.
func ValidatePatterns(patterns []string) error {
	var errs []error
	for _, p := range patterns {
		errs = append(errs, ValidatePattern(p))
	}
	return errors.Join(errs...)
}
