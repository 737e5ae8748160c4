package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateWatch(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"a", "a.b", "sensors.room-1"} {
		if pattern, err := ValidateWatch(name); err != nil || pattern {
			t.Errorf("ValidateWatch(%q) = %v, %v; want a channel", name, pattern, err)
		}
	}
	for _, name := range []string{"*", ">", "a.*", "a.>", "*.*.>", "a_b-c.*.D9"} {
		if pattern, err := ValidateWatch(name); err != nil || !pattern {
			t.Errorf("ValidateWatch(%q) = %v, %v; want a pattern", name, pattern, err)
		}
	}
	for _, name := range []string{"", ".", "a.", ".a", "a..b", ">.a", "a.>.b", "a*", "a.b*", "a>", "a.*.", "a b", "a/b",
		strings.Repeat("a", 129), strings.Repeat("a.", 63) + "*.>"} {
		_, err := ValidateWatch(name)
		if err == nil {
			t.Errorf("ValidateWatch(%q) accepted", name)
			continue
		}
		if !errors.Is(err, ErrInvalidChannel) && !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ValidateWatch(%q) = %v, wraps neither error", name, err)
		}
	}
}

// FuzzWatch: whatever ValidateWatch accepts is a channel or a pattern whose
// wildcards are whole tokens, `>` only last; nothing else NATS treats
// specially can get into a subscription.
func FuzzWatch(f *testing.F) {
	for _, s := range []string{"a", "a.*", "a.>", ">", "*.b", "a.>.b", "a*", "a..>", ""} {
		f.Add(s)
		for i := range s {
			f.Add(s[:i])
		}
	}
	f.Fuzz(func(t *testing.T, name string) {
		pattern, err := ValidateWatch(name)
		if err != nil {
			return
		}
		if pattern != IsPattern(name) || len(name) > MaxChannelLen || strings.ContainsAny(name, " \t\r\n\x00") {
			t.Fatalf("accepted %q (pattern %v)", name, pattern)
		}
		toks := strings.Split(name, ".")
		for i, tok := range toks {
			if tok == "" || (strings.ContainsAny(tok, "*>") && len(tok) != 1) || (tok == ">" && i != len(toks)-1) {
				t.Fatalf("accepted %q: token %q", name, tok)
			}
		}
	})
}

func TestChannelPart(t *testing.T) {
	t.Parallel()
	m, err := NewMapper("relay")
	if err != nil {
		t.Fatal(err)
	}
	for subject, want := range map[string]string{"relay.ch.a.b": "a.b", "relay.ch.x": "x", "relay.ch.a:b": "a:b"} {
		if got := m.ChannelPart(subject); got != want {
			t.Errorf("ChannelPart(%q) = %q, want %q", subject, got, want)
		}
	}
}
