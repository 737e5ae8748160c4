package main

import (
	"slices"
	"testing"
)

func TestExpandLongestNameFirst(t *testing.T) {
	vars := map[string]string{"in": "X", "instance": ".*", "__rate_interval": "1m"}
	got := expand(`rate(m{instance=~"$instance",a="${in}"}[$__rate_interval])`, vars)
	if want := `rate(m{instance=~".*",a="X"}[1m])`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestLegend(t *testing.T) {
	l := map[string]string{"__name__": "m", "tier": "fanout", "instance": "a:1"}
	for format, want := range map[string]string{
		"{{instance}} {{tier}}": "a:1 fanout",
		"{{ tier }}":            "fanout",
		"{{missing}} x":         "x",
		"":                      `{instance="a:1", tier="fanout"}`,
	} {
		if got := legend(format, l); got != want {
			t.Errorf("legend(%q) = %q, want %q", format, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{83200, "short", "83.2k"},
		{0.8, "percentunit", "80%"},
		{3 << 20, "bytes", "3 MiB"},
		{1536, "Bps", "1.5 KiB/s"},
		{12, "short", "12"},
	} {
		if got := format(c.v, c.unit); got != c.want {
			t.Errorf("format(%v, %s) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestNiceTicks(t *testing.T) {
	if got, want := niceTicks(0, 1, 4), []float64{0, 0.25, 0.5, 0.75, 1}; !slices.Equal(got, want) {
		t.Errorf("niceTicks(0, 1, 4) = %v, want %v", got, want)
	}
	if got := niceTicks(0, 47000, 4); got[0] != 0 || got[len(got)-1] < 40000 || len(got) > 7 {
		t.Errorf("niceTicks(0, 47000, 4) = %v", got)
	}
}
