package subjects

import (
	"errors"
	"testing"
)

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p  string
		ok bool
	}{
		{"a", true}, {"a.b", true}, {"*", true}, {">", true}, {"a.*", true}, {"a.>", true},
		{"*.b.>", true}, {"a.*.c", true},
		{"", false}, {"a.", false}, {".a", false}, {"a..b", false}, {">.a", false},
		{"a.>.b", false}, {"a*", false}, {"a.b>", false}, {"a b", false}, {"**", false},
	} {
		err := ValidatePattern(tt.p)
		if (err == nil) != tt.ok {
			t.Errorf("ValidatePattern(%q) = %v, want ok=%v", tt.p, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("ValidatePattern(%q) = %v, does not wrap ErrInvalidPattern", tt.p, err)
		}
	}
}

func TestMatchPattern(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p, ch string
		want  bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"a", "a.b", false}, {"a.b", "a", false},
		{"*", "a", true}, {"*", "a.b", false},
		{">", "a", true}, {">", "a.b.c", true},
		{"a.>", "a", false}, {"a.>", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "b.c", false},
		{"a.*", "a.b", true}, {"a.*", "a.b.c", false}, {"a.*", "a", false},
		{"*.b", "x.b", true}, {"*.b", "x.c", false}, {"a.*.c", "a.x.c", true}, {"a.*.c", "a.x.d", false},
		{"ab", "a", false}, {"a", "ab", false},
	} {
		if got := MatchPattern(tt.p, tt.ch); got != tt.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tt.p, tt.ch, got, tt.want)
		}
	}
}

// FuzzMatchPattern: matching never panics, and a pattern without wildcards
// matches exactly the channel it spells.
func FuzzMatchPattern(f *testing.F) {
	for _, s := range [][2]string{{"a.>", "a.b"}, {"*.b", "a.b"}, {"a", "a"}, {">", "x.y"}, {"a.*.c", "a.b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p, ch string) {
		if ValidatePattern(p) != nil || ValidateChannel(ch) != nil {
			return
		}
		got := MatchPattern(p, ch)
		if ValidateChannel(p) == nil && got != (p == ch) {
			t.Fatalf("MatchPattern(%q, %q) = %v for a literal pattern", p, ch, got)
		}
	})
}
