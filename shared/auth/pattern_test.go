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
