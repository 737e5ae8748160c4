package auth

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, channel string
		want             bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a", "a.b", false},
		{"a.b", "a", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.>", "ab.c", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"*.*.>", "a.b", false},
		{"*.*.>", "a.b.c", true},
		{"sensors.room1", "sensors.room10", false},
		{"sensors.room10", "sensors.room1", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.channel); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.channel, got, c.want)
		}
		if got := refMatch(c.pattern, c.channel); got != c.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v (the reference is wrong)", c.pattern, c.channel, got, c.want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"a", "a.b", "*", ">", "a.*", "a.>", "*.*.>", "a_b-c.D9"} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", ">.a", "a.>.b", "a*", "a.b*", "a b", "a/b", strings.Repeat("a", 129)} {
		if err := ValidatePattern(p); err == nil {
			t.Errorf("ValidatePattern(%q) = nil, want an error", p)
		}
	}
}

// refMatch is the obvious reference: split both on dots and compare token by
// token (NATS subject matching).
func refMatch(pattern, channel string) bool {
	p := strings.Split(pattern, ".")
	c := strings.Split(channel, ".")
	for i, tok := range p {
		if tok == ">" {
			return i == len(p)-1 && len(c) > i
		}
		if i >= len(c) {
			return false
		}
		if tok != "*" && tok != c[i] {
			return false
		}
	}
	return len(p) == len(c)
}

// FuzzMatch checks Match against refMatch for every valid pattern and
// channel the fuzzer finds.
func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"a", "a"}, {"a.*", "a.b"}, {"a.>", "a.b.c"}, {">", "x"}, {"*.b", "a.b"},
		{"a.*.c", "a.b.c"}, {"a.b", "a.b.c"}, {"a.b.c", "a.b"}, {"*.*.>", "a.b"},
	}
	for _, s := range seeds {
		// Split the pair at every point too, as the parsers' fuzz seeds do.
		f.Add(s[0], s[1])
		for i := range s[1] {
			f.Add(s[0], s[1][:i])
		}
	}
	f.Fuzz(func(t *testing.T, pattern, channel string) {
		if ValidatePattern(pattern) != nil || !validChannel(channel) {
			return
		}
		if got, want := Match(pattern, channel), refMatch(pattern, channel); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, channel, got, want)
		}
	})
}

func validChannel(s string) bool {
	return ValidatePattern(s) == nil && !strings.ContainsAny(s, "*>")
}

func BenchmarkMatch(b *testing.B) {
	for b.Loop() {
		Match("sensors.*.temp.>", "sensors.room1.temp.celsius.raw")
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		outer, inner string
		want         bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"*", "*", true},
		{"*", "a", true},
		{"a", "*", false},
		{">", ">", true},
		{">", "a.*.>", true},
		{">", "*", true},
		{"*", ">", false},
		{"a.>", "a.>", true},
		{"a.>", "a.*", true},
		{"a.>", "a.b.>", true},
		{"a.>", "a", false},
		{"a.>", ">", false},
		{"a.>", "*.b", false},
		{"a.*", "a.>", false},
		{"a.*", "a.*", true},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.*", "a", false},
		{"a.*.>", "a.>", false},
		{"*.*", "a.*", true},
		{"a.*", "*.*", false},
		{"sensors.*", "sensors.>", false},
		{"sensors.>", "sensors.*", true},
		{"sensors.room1", "sensors.*", false},
	}
	for _, c := range cases {
		if got := Covers(c.outer, c.inner); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.outer, c.inner, got, c.want)
		}
		if got := refCovers(c.outer, c.inner); got != c.want {
			t.Errorf("refCovers(%q, %q) = %v, want %v (the reference is wrong)", c.outer, c.inner, got, c.want)
		}
	}
}

// refCovers decides coverage by brute force: over every channel of up to
// one token more than the longer pattern, built from the patterns' own
// tokens and one token neither has, inner matching implies outer matching.
// That alphabet and length are enough for a counterexample whenever one
// exists (a `*` or `>` can always take the fresh token).
func refCovers(outer, inner string) bool {
	toks := map[string]bool{"zz": true}
	for _, tok := range strings.Split(outer+"."+inner, ".") {
		if tok != "*" && tok != ">" {
			toks[tok] = true
		}
	}
	alphabet := make([]string, 0, len(toks))
	for tok := range toks {
		alphabet = append(alphabet, tok)
	}
	maxLen := max(strings.Count(outer, "."), strings.Count(inner, ".")) + 2
	var walk func(prefix []string) bool
	walk = func(prefix []string) bool {
		if len(prefix) > 0 {
			ch := strings.Join(prefix, ".")
			if refMatch(inner, ch) && !refMatch(outer, ch) {
				return false
			}
		}
		if len(prefix) == maxLen {
			return true
		}
		for _, tok := range alphabet {
			if !walk(append(prefix, tok)) {
				return false
			}
		}
		return true
	}
	return walk(nil)
}

// FuzzCovers checks Covers against the brute-force reference, and that
// coverage agrees with Match on channels (a channel is a pattern that
// matches only itself).
func FuzzCovers(f *testing.F) {
	seeds := [][2]string{
		{"a.>", "a.*"}, {"a.*", "a.>"}, {">", "x.y"}, {"*.b", "a.b"}, {"*.*", "a.*"}, {"a.*.c", "a.b.c"},
		{"a.b", "a.b.c"}, {"*.*.>", "a.b"}, {"sensors.*", "sensors.>"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
		for i := range s[1] {
			f.Add(s[0], s[1][:i])
		}
	}
	f.Fuzz(func(t *testing.T, outer, inner string) {
		if ValidatePattern(outer) != nil || ValidatePattern(inner) != nil ||
			strings.Count(outer, ".") > 4 || strings.Count(inner, ".") > 4 {
			return
		}
		got := Covers(outer, inner)
		if want := refCovers(outer, inner); got != want {
			t.Fatalf("Covers(%q, %q) = %v, reference says %v", outer, inner, got, want)
		}
		if validChannel(inner) && got != Match(outer, inner) {
			t.Fatalf("Covers(%q, %q) = %v but Match says %v", outer, inner, got, !got)
		}
		if !Covers(inner, inner) {
			t.Fatalf("%q does not cover itself", inner)
		}
	})
}

// A watch permission reaches a pattern only through a pattern that covers
// it: sensors.* does not let its holder watch sensors.> (which also matches
// sensors.a.b).
func TestPermissionsAllowPatterns(t *testing.T) {
	t.Parallel()
	p := Permissions{Watch: []string{"sensors.*", "logs.>"}}
	for name, want := range map[string]bool{
		"sensors.a": true, "sensors.*": true, "sensors.>": false, "sensors.a.b": false, ">": false,
		"logs.>": true, "logs.*": true, "logs.a.*.>": true, "logs": false, "*.a": false,
	} {
		if got := p.Allows(ActionWatch, name); got != want {
			t.Errorf("watch %v: Allows(%q) = %v, want %v", p.Watch, name, got, want)
		}
	}
}
