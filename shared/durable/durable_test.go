package durable

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func durableConfig(patterns ...string) config.Durable {
	return config.Durable{
		DurableChannels: patterns, DurableStream: "RELAY", DurableMaxAge: 24 * time.Hour,
		DurableMaxMsgs: 10000, DurableMaxBytes: 1 << 30, DurableReplicas: 1,
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	s, err := New("relay", durableConfig("orders.>", "chat.*", "alerts"))
	if err != nil {
		t.Fatal(err)
	}
	for ch, want := range map[string]bool{
		"orders.eu": true, "orders.eu.1": true, "orders": false,
		"chat.room1": true, "chat.room1.x": false, "chat": false,
		"alerts": true, "alerts.x": false, "default": false,
	} {
		if got := s.Matches(ch); got != want {
			t.Errorf("Matches(%q) = %v, want %v", ch, got, want)
		}
	}
	var none *Stream
	if none.Enabled() || none.Matches("x") {
		t.Error("a nil Stream must be disabled and match nothing")
	}
	empty, err := New("relay", durableConfig())
	if err != nil {
		t.Fatal(err)
	}
	if empty.Enabled() || empty.Matches("x") {
		t.Error("no patterns: must be disabled and match nothing")
	}
}

// TestOverlappingPatternsDropped: JetStream refuses a stream whose subjects
// overlap, so patterns a broader one covers are dropped (duplicates too).
func TestOverlappingPatternsDropped(t *testing.T) {
	t.Parallel()
	s, err := New("relay", durableConfig("a.b", "a.*", "a.>", "c", "c", "d.*.x", "*.*.x", "e.>", "e.f"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.>", "c", "*.*.x", "e.>"}
	if got := s.Patterns(); !slices.Equal(got, want) {
		t.Fatalf("Patterns() = %v, want %v", got, want)
	}
	if got := s.Config().Subjects; !slices.Equal(got, []string{"relay.ch.a.>", "relay.ch.c", "relay.ch.*.*.x", "relay.ch.e.>"}) {
		t.Fatalf("subjects %v", got)
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{">", "a", true}, {">", "a.>", true}, {"a.>", ">", false}, {"a.>", "a.b", true}, {"a.>", "a", false},
		{"a.*", "a.b", true}, {"a.*", "a.*", true}, {"a.*", "a.>", false}, {"a.b", "a.*", false},
		{"*.b", "a.b", true}, {"*.b", "a.c", false}, {"a", "a.b", false}, {"a.b", "a", false},
	} {
		if got := covers(tt.a, tt.b); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestConfigLimits(t *testing.T) {
	t.Parallel()
	c := durableConfig("x")
	c.DurableMaxAge, c.DurableMaxMsgs, c.DurableMaxBytes, c.DurableReplicas = time.Minute, 0, 0, 3
	s, err := New("p", c)
	if err != nil {
		t.Fatal(err)
	}
	sc := s.Config()
	if sc.Storage != jetstream.FileStorage || sc.Replicas != 3 || sc.MaxAge != time.Minute ||
		sc.MaxMsgsPerSubject != -1 || sc.MaxBytes != -1 || sc.Discard != jetstream.DiscardOld {
		t.Fatalf("config %+v", sc)
	}
	if sc.Duplicates != time.Minute {
		t.Fatalf("duplicate window %s with max age 1m, want 1m (it may not exceed the age)", sc.Duplicates)
	}
	if _, err := New("p", durableConfig("a b")); err == nil {
		t.Fatal("a bad pattern must be refused")
	}
}

// TestEnsure creates the stream, leaves it alone when it matches, updates
// it when the patterns or limits change, keeps settings relay does not
// manage, and logs each outcome.
func TestEnsure(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	js, err := jetstream.New(testutil.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	lastLog := func() string {
		mu.Lock()
		defer mu.Unlock()
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		return lines[len(lines)-1]
	}

	s, _ := New("relay", durableConfig("orders.>"))
	if _, err := s.Ensure(ctx, js, log); err != nil {
		t.Fatal(err)
	}
	if l := lastLog(); !strings.Contains(l, "created JetStream stream") || !strings.Contains(l, "relay.ch.orders.>") {
		t.Fatalf("log %q", l)
	}
	info := streamInfo(t, ctx, js)
	if info.Config.MaxMsgsPerSubject != 10000 || info.Config.MaxBytes != 1<<30 || info.Config.Duplicates != DuplicateWindow ||
		info.Config.Storage != jetstream.FileStorage || info.Config.MaxAge != 24*time.Hour {
		t.Fatalf("stream config %+v", info.Config)
	}

	if _, err := s.Ensure(ctx, js, log); err != nil {
		t.Fatal(err)
	}
	if l := lastLog(); !strings.Contains(l, "already as configured") {
		t.Fatalf("second Ensure logged %q, want unchanged", l)
	}

	// Someone set a setting relay does not manage; then the patterns and a
	// limit change.
	cfg := info.Config
	cfg.Description = "kept"
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	c := durableConfig("orders.>", "chat.*")
	c.DurableMaxMsgs = 50
	s2, _ := New("relay", c)
	if _, err := s2.Ensure(ctx, js, log); err != nil {
		t.Fatal(err)
	}
	if l := lastLog(); !strings.Contains(l, "updated JetStream stream") || !strings.Contains(l, "max_msgs_per_subject 10000 -> 50") {
		t.Fatalf("log %q", l)
	}
	info = streamInfo(t, ctx, js)
	if !slices.Equal(info.Config.Subjects, []string{"relay.ch.orders.>", "relay.ch.chat.*"}) || info.Config.MaxMsgsPerSubject != 50 {
		t.Fatalf("updated config %+v", info.Config)
	}
	if info.Config.Description != "kept" {
		t.Fatalf("description %q: a setting relay does not manage was lost", info.Config.Description)
	}
}

// TestEnsureConcurrent: pods starting together all succeed.
func TestEnsureConcurrent(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, _ := New("relay", durableConfig("a.>"))
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		js, err := jetstream.New(testutil.Connect(t, srv))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _, errs[i] = s.Ensure(ctx, js, testutil.Logger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Ensure %d: %v", i, err)
		}
	}
}

// TestEnsureRefusesMemoryStream: storage cannot change in place; the error
// says what to do.
func TestEnsureRefusesMemoryStream(t *testing.T) {
	t.Parallel()
	srv := testutil.JetStreamServer(t)
	js, err := jetstream.New(testutil.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RELAY", Subjects: []string{"relay.ch.a"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	s, _ := New("relay", durableConfig("a"))
	_, err = s.Ensure(ctx, js, testutil.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "cannot be changed in place") {
		t.Fatalf("Ensure = %v, want a refusal naming the storage", err)
	}
}

func streamInfo(t *testing.T, ctx context.Context, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	st, err := js.Stream(ctx, "RELAY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
