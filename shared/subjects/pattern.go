package subjects

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidPattern is returned (wrapped with the reason) for a channel
// pattern that is not dot-joined tokens, each a channel token, `*`, or a
// final `>`.
var ErrInvalidPattern = errors.New("invalid channel pattern")

// ValidatePattern reports whether p is a channel pattern: channel tokens
// joined by `.`, where a token may also be `*` (exactly one token) and the
// last token may be `>` (one or more tokens), as in NATS subjects. A
// channel name is a pattern that matches only itself.
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalidPattern)
	}
	if len(p) > MaxChannelLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidPattern, MaxChannelLen)
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
			if err := ValidateChannel(tok); err != nil {
				return fmt.Errorf("%w: %q: token %q: %s", ErrInvalidPattern, p, tok,
					strings.TrimPrefix(err.Error(), ErrInvalidChannel.Error()+": "))
			}
		}
		if more && after == "" {
			return fmt.Errorf("%w: %q: empty token (trailing dot)", ErrInvalidPattern, p)
		}
		rest = after
	}
	return nil
}

// IsPattern reports whether name has a wildcard token (`*` or `>`). For a
// name that passes ValidatePattern it tells a pattern from a channel: a
// channel's tokens can hold neither character.
func IsPattern(name string) bool { return strings.ContainsAny(name, "*>") }

// ValidateWatch checks what a watcher asks for: a channel, or (where
// wildcard watching is allowed) a pattern. It reports whether name is a
// pattern. The error wraps ErrInvalidChannel or ErrInvalidPattern and says
// what is wrong.
func ValidateWatch(name string) (pattern bool, err error) {
	if !IsPattern(name) {
		return false, ValidateChannel(name)
	}
	return true, ValidatePattern(name)
}
