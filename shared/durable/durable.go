// Package durable is the NATS JetStream stream behind durable channels
// (docs/architecture.md, Durable channels): which channels are durable, the
// stream's name, subjects and limits, and making the stream exist with them.
// Ingest publishes into it with acks; fanout reads from it.
//
// One stream (RELAY_DURABLE_STREAM) captures `<prefix>.ch.<pattern>` for every
// pattern of RELAY_DURABLE_CHANNELS: a pattern appended to the channel
// prefix is a NATS subject filter that matches exactly the channels the
// pattern matches, so the stream stores what Matches says is durable.
// Patterns are shared/auth's (the same grammar as a token's permissions).
package durable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/subjects"
)

// DuplicateWindow is how long the stream remembers a Nats-Msg-Id: a publish
// retried within it is stored once.
const DuplicateWindow = 2 * time.Minute

// Stream describes the durable channels' stream. The zero value and nil
// describe none: Enabled is false and Matches never matches.
type Stream struct {
	name     string
	patterns []string // deduplicated: none covers another
	subjects []string // <prefix>.ch.<pattern>, in patterns' order
	limits   config.Durable
}

// New describes the stream for the channels of c under subject prefix
// prefix. Patterns covered by a broader one are dropped (a stream may not
// list overlapping subjects).
func New(prefix string, c config.Durable) (*Stream, error) {
	mapper, err := subjects.NewMapper(prefix)
	if err != nil {
		return nil, fmt.Errorf("durable: %w", err)
	}
	if err := c.Validate(config.RoleIngest); err != nil {
		return nil, fmt.Errorf("durable: %w", err)
	}
	s := &Stream{name: c.DurableStream, limits: c}
	var all []string
	for _, p := range c.DurableChannels {
		if p = strings.TrimSpace(p); p != "" {
			all = append(all, p)
		}
	}
	for i, p := range all {
		dropped := slices.ContainsFunc(all[:i], func(q string) bool { return covers(q, p) })
		dropped = dropped || slices.ContainsFunc(all[i+1:], func(q string) bool { return covers(q, p) && !covers(p, q) })
		if !dropped {
			s.patterns = append(s.patterns, p)
			s.subjects = append(s.subjects, mapper.Subject(p))
		}
	}
	return s, nil
}

// Enabled reports whether any channel is durable.
func (s *Stream) Enabled() bool { return s != nil && len(s.patterns) > 0 }

// Name is the stream's name.
func (s *Stream) Name() string { return s.name }

// Patterns are the durable channel patterns, without redundant ones.
func (s *Stream) Patterns() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.patterns)
}

// Matches reports whether channel (a valid channel name) is durable.
func (s *Stream) Matches(channel string) bool {
	if s == nil {
		return false
	}
	for _, p := range s.patterns {
		if auth.Match(p, channel) {
			return true
		}
	}
	return false
}

// Config is the stream configuration relay wants: file storage, limits
// retention discarding the oldest messages first, the duplicate window.
func (s *Stream) Config() jetstream.StreamConfig {
	c := jetstream.StreamConfig{
		Name:              s.name,
		Description:       "relay durable channels (managed by relay: subjects and limits are reset at start)",
		Subjects:          slices.Clone(s.subjects),
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          s.limits.DurableReplicas,
		MaxAge:            s.limits.DurableMaxAge,
		MaxMsgsPerSubject: orUnlimited(s.limits.DurableMaxMsgs),
		MaxBytes:          orUnlimited(s.limits.DurableMaxBytes),
		MaxMsgs:           -1,
		Duplicates:        DuplicateWindow,
	}
	if c.MaxAge > 0 && c.MaxAge < c.Duplicates {
		c.Duplicates = c.MaxAge // the server refuses a window longer than the age limit
	}
	return c
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Ensure creates the stream, or updates it when its subjects or limits
// differ from Config; a stream that already matches is left alone. It logs
// what it did. Settings relay does not manage (e.g. compression, a
// description) are kept. Several relay processes may run it at once.
func (s *Stream) Ensure(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (jetstream.Stream, error) {
	if !s.Enabled() {
		return nil, errors.New("durable: no durable channels configured")
	}
	want := s.Config()
	for attempt := 0; ; attempt++ {
		st, err := js.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
				continue // another relay created it meanwhile: compare with theirs
			}
			if err != nil {
				return nil, fmt.Errorf("durable: create stream %s: %w", s.name, err)
			}
			log.Info("durable: created JetStream stream", s.logAttrs(want)...)
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("durable: look up stream %s: %w", s.name, err)
		}
		have := st.CachedInfo().Config
		diff := s.differences(have, want)
		if len(diff) == 0 {
			log.Info("durable: JetStream stream already as configured", s.logAttrs(want)...)
			return st, nil
		}
		if have.Storage != want.Storage || have.Retention != want.Retention {
			return nil, fmt.Errorf("durable: stream %s exists with %s storage and %s retention; relay needs file storage and limits retention, which cannot be changed in place: delete or rename it (RELAY_DURABLE_STREAM)",
				s.name, have.Storage, have.Retention)
		}
		upd := have
		upd.Subjects, upd.Retention, upd.Discard = want.Subjects, want.Retention, want.Discard
		upd.Replicas, upd.MaxAge, upd.MaxMsgsPerSubject = want.Replicas, want.MaxAge, want.MaxMsgsPerSubject
		upd.MaxBytes, upd.MaxMsgs, upd.Duplicates = want.MaxBytes, want.MaxMsgs, want.Duplicates
		st, err = js.UpdateStream(ctx, upd)
		if err != nil {
			return nil, fmt.Errorf("durable: update stream %s (%s): %w", s.name, strings.Join(diff, "; "), err)
		}
		log.Info("durable: updated JetStream stream", append(s.logAttrs(want), "changed", strings.Join(diff, "; "))...)
		return st, nil
	}
}

// differences lists the managed settings in which have differs from want.
func (s *Stream) differences(have, want jetstream.StreamConfig) []string {
	var d []string
	add := func(name string, h, w any) {
		if h != w {
			d = append(d, fmt.Sprintf("%s %v -> %v", name, h, w))
		}
	}
	if !slices.Equal(sorted(have.Subjects), sorted(want.Subjects)) {
		d = append(d, fmt.Sprintf("subjects %v -> %v", have.Subjects, want.Subjects))
	}
	add("storage", have.Storage, want.Storage)
	add("retention", have.Retention, want.Retention)
	add("discard", have.Discard, want.Discard)
	add("replicas", have.Replicas, want.Replicas)
	add("max_age", have.MaxAge, want.MaxAge)
	add("max_msgs_per_subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject)
	add("max_bytes", have.MaxBytes, want.MaxBytes)
	add("max_msgs", have.MaxMsgs, want.MaxMsgs)
	add("duplicate_window", have.Duplicates, want.Duplicates)
	return d
}

func (s *Stream) logAttrs(c jetstream.StreamConfig) []any {
	return []any{"stream", c.Name, "subjects", strings.Join(c.Subjects, ","), "replicas", c.Replicas,
		"max_age", c.MaxAge, "max_msgs_per_channel", c.MaxMsgsPerSubject, "max_bytes", c.MaxBytes,
		"duplicate_window", c.Duplicates}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// covers reports whether every channel matching pattern b also matches
// pattern a (both valid).
func covers(a, b string) bool {
	for {
		at, arest, amore := strings.Cut(a, ".")
		bt, brest, bmore := strings.Cut(b, ".")
		switch {
		case at == ">":
			return true // b has at least this token left
		case bt == ">":
			return false
		case at != "*" && at != bt:
			return false
		}
		if !amore || !bmore {
			return amore == bmore
		}
		a, b = arest, brest
	}
}
