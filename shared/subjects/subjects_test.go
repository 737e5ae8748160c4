package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateChannel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"default", true},
		{"a", true},
		{"sensors.room-1.temp_c", true},
		{"A.B.C", true},
		{strings.Repeat("x", MaxChannelLen), true},
		{strings.Repeat("x", MaxChannelLen+1), false},
		{"", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"bad channel!", false},
		{"a*", false},
		{"a.>", false},
		{"a b", false},
		{"a\x00", false},
		{"é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateChannel(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateChannel(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidChannel) {
				t.Fatalf("error %v does not wrap ErrInvalidChannel", err)
			}
		})
	}
}

func TestMapperRoundTrip(t *testing.T) {
	t.Parallel()
	m, err := NewMapper("relay")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Subject("a.b"); got != "relay.ch.a.b" {
		t.Fatalf("Subject = %q", got)
	}
	if ch, ok := m.Channel("relay.ch.a.b"); !ok || ch != "a.b" {
		t.Fatalf("Channel = %q, %v", ch, ok)
	}
	for _, s := range []string{"relay.ch.", "relay.x.a", "other.ch.a", "relay.ch.a..b"} {
		if _, ok := m.Channel(s); ok {
			t.Errorf("Channel(%q) accepted", s)
		}
	}
	if m.Wildcard() != "relay.ch.>" {
		t.Fatalf("Wildcard = %q", m.Wildcard())
	}
	for _, p := range []string{"", "a b", "a.", "x.*"} {
		if _, err := NewMapper(p); err == nil {
			t.Errorf("NewMapper(%q) accepted", p)
		}
	}
}

func FuzzChannel(f *testing.F) {
	for _, s := range []string{"default", "a.b.c", "bad channel!", "a..b", "x.>", ""} {
		f.Add(s)
	}
	m, _ := NewMapper("relay")
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateChannel(name)
		if err != nil {
			return
		}
		if strings.ContainsAny(name, " *>\t\r\n\x00") || len(name) > MaxChannelLen {
			t.Fatalf("accepted %q", name)
		}
		ch, ok := m.Channel(m.Subject(name))
		if !ok || ch != name {
			t.Fatalf("round trip of %q gave %q, %v", name, ch, ok)
		}
		if ch, ok := m.EventChannel(m.EventSubject(name)); !ok || ch != name {
			t.Fatalf("event round trip of %q gave %q, %v", name, ch, ok)
		}
		// A channel's control and event subjects are never another
		// channel's data subject.
		if _, ok := m.Channel(m.ControlSubject(name)); ok {
			t.Fatalf("control subject of %q reads as a data subject", name)
		}
		if _, ok := m.Channel(m.EventSubject(name)); ok {
			t.Fatalf("event subject of %q reads as a data subject", name)
		}
	})
}

func TestControlAndEventSubjects(t *testing.T) {
	t.Parallel()
	m, err := NewMapper("relay.eu")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.ControlSubject("dev.1"); got != "relay.eu.ctl.dev.1" {
		t.Fatalf("ControlSubject = %q", got)
	}
	if got := m.EventSubject("dev.1"); got != "relay.eu.ev.dev.1" {
		t.Fatalf("EventSubject = %q", got)
	}
	if got := m.EventWildcard(); got != "relay.eu.ev.>" {
		t.Fatalf("EventWildcard = %q", got)
	}
	for subject, want := range map[string]string{"relay.eu.ev.dev.1": "dev.1", "relay.eu.ev.": "", "relay.eu.ch.dev": "", "relay.ev.dev": "", "relay.eu.ev.a..b": ""} {
		got, ok := m.EventChannel(subject)
		if got != want || ok != (want != "") {
			t.Errorf("EventChannel(%q) = %q, %v; want %q", subject, got, ok, want)
		}
	}
}
