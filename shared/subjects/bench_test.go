package subjects

import "testing"

// BenchmarkSubject is the per-connection cost of naming a channel's subject
// (ingest maps once per sender, fanout once per channel).
func BenchmarkSubject(b *testing.B) {
	m, err := NewMapper("relay")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Subject("sensors.room1")
	}
}

// BenchmarkValidateChannel checks a typical and a longest valid name.
func BenchmarkValidateChannel(b *testing.B) {
	long := ""
	for len(long) < MaxChannelLen-8 {
		long += "abc-123."
	}
	long += "last_one"
	for _, name := range []string{"sensors.room1", long[:MaxChannelLen]} {
		b.Run(map[bool]string{true: "short", false: "max"}[len(name) < 20], func(b *testing.B) {
			if err := ValidateChannel(name); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(name)))
			b.ReportAllocs()
			for b.Loop() {
				_ = ValidateChannel(name)
			}
		})
	}
}

// BenchmarkChannel maps a subject back to its channel (and validates it).
func BenchmarkChannel(b *testing.B) {
	m, err := NewMapper("relay")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := m.Channel("relay.ch.sensors.room1"); !ok {
			b.Fatal("not a channel subject")
		}
	}
}
