package tierkit

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	t.Parallel()
	l := NewLogLimiter(time.Hour)
	if _, ok := l.Allow("a"); !ok {
		t.Fatal("first line held back")
	}
	for range 3 {
		if _, ok := l.Allow("a"); ok {
			t.Fatal("line let through within the interval")
		}
	}
	if _, ok := l.Allow("b"); !ok {
		t.Fatal("keys are limited together")
	}
	l.next["a"] = time.Time{}
	if held, ok := l.Allow("a"); !ok || held != 3 {
		t.Fatalf("after the interval: held %d, ok %v; want 3, true", held, ok)
	}
}

func TestDefaultsAndCheck(t *testing.T) {
	t.Parallel()
	var log *slog.Logger
	var grace time.Duration
	Defaults("ingest", &log, &grace)
	if log == nil || grace != DefaultShutdownGrace {
		t.Fatalf("Defaults: logger %v, grace %s", log, grace)
	}
	given := slog.New(slog.DiscardHandler)
	log, grace = given, time.Second
	Defaults("ingest", &log, &grace)
	if log != given || grace != time.Second {
		t.Fatal("Defaults replaced what was given")
	}
	errs := Check(nil, "a b")
	if len(errs) != 2 || !strings.Contains(errors.Join(errs...).Error(), "NATS") || !strings.Contains(errors.Join(errs...).Error(), "prefix") {
		t.Fatalf("Check = %v, want the nil connection and the prefix", errs)
	}
}

type conn bool

func (c conn) IsConnected() bool { return bool(c) }

func TestNATSReady(t *testing.T) {
	t.Parallel()
	if err := NATSReady(conn(true))(); err != nil {
		t.Fatal(err)
	}
	if err := NATSReady(conn(false))(); !errors.Is(err, ErrNATSDisconnected) {
		t.Fatalf("disconnected: %v", err)
	}
}
