// Package natsconn connects relay's tiers to NATS: a first connection retried
// within a window (so a pod starting before NATS does not crash-loop, yet a
// wrong URL still fails the start), unlimited reconnects afterwards, and the
// embedded server that `relay all` and the tests run in-process.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/relaydev/relay/shared/metrics"
)

// Defaults of Options.PingInterval and Options.MaxPingsOut.
const (
	DefaultPingInterval = 4 * time.Second
	DefaultMaxPingsOut  = 2
)

// ErrUnreachable is returned when no server answered within the retry window.
var ErrUnreachable = errors.New("natsconn: NATS unreachable")

// Options configure Connect.
type Options struct {
	// URLs to try; ignored when InProcess is set.
	URLs []string
	// InProcess connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
	// Name identifies the connection in the NATS server's monitoring.
	Name string
	// RetryWindow bounds how long the first connection is retried. Defaults to 30s.
	RetryWindow time.Duration
	// Logger receives connection events. Defaults to slog.Default().
	Logger *slog.Logger
	// PingInterval is how often the client pings the server; after
	// MaxPingsOut unanswered pings the connection is declared stale and
	// replaced, exactly like a dropped one. A frozen or blackholed server is
	// so noticed within PingInterval x (MaxPingsOut + 1). Default 4s and 2.
	PingInterval time.Duration
	MaxPingsOut  int
	// NoReconnectBuffer makes a publish fail at once while the connection
	// is down, instead of buffering it in nats.go's reconnect buffer and
	// replaying the buffer as a burst on reconnect. Ingest sets it: it
	// accepts no message it cannot hand to NATS.
	NoReconnectBuffer bool
	// OnEvent, when set, is called on each connection event.
	OnEvent func(event metrics.NATSEvent)
	// Extra options appended last (tests, tuning).
	Extra []nats.Option
	// Auth holds credentials and TLS files (RELAY_NATS_*_FILE).
	Auth Auth
}

// Connect dials NATS, retrying with jittered backoff until ctx ends or the
// retry window passes. Once connected, the connection reconnects forever:
// losing NATS later makes the tier unready, never exit.
func Connect(ctx context.Context, o Options) (*nats.Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.RetryWindow <= 0 {
		o.RetryWindow = 30 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.MaxPingsOut <= 0 {
		o.MaxPingsOut = DefaultMaxPingsOut
	}
	event := func(e metrics.NATSEvent) {
		if o.OnEvent != nil {
			o.OnEvent(e)
		}
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(o.MaxPingsOut),
		// A write to a frozen server blocks while holding the connection's
		// lock, which also holds up the ping timer: bound it by the same
		// budget as the pings (nats.go's default is a minute).
		nats.FlusherTimeout(o.PingInterval * time.Duration(o.MaxPingsOut)),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // our own Close or Drain
				log.Debug("nats connection closed")
				return
			}
			log.Warn("nats disconnected", "err", err)
			event(metrics.NATSDisconnect)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			event(metrics.NATSReconnect)
		}),
		nats.ClosedHandler(func(*nats.Conn) { event(metrics.NATSClosed) }),
	}
	if o.NoReconnectBuffer {
		opts = append(opts, nats.ReconnectBufSize(-1))
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	authOpts, err := o.Auth.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, authOpts...)
	opts = append(opts, o.Extra...)

	url := nats.DefaultURL
	if len(o.URLs) > 0 {
		url = joinURLs(o.URLs)
	}
	deadline := time.Now().Add(o.RetryWindow)
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			log.Info("nats connected", "url", where(nc, o.InProcess), "name", o.Name)
			return nc, nil
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("%w: %s after %d attempts in %s: %v", ErrUnreachable, redact(o.URLs), attempt, o.RetryWindow, err)
		}
		log.Warn("nats connect failed; retrying", "attempt", attempt, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("natsconn: connect: %w", ctx.Err())
		case <-time.After(wait + rand.N(wait/4+1)):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// where names the server a connection reached, for logs. An in-process
// connection reports nats.go's default URL, where nothing may listen: say
// "in-process" instead, or, when the embedded server also listens
// (RELAY_NATS_LISTEN), the address other NATS clients can reach it on.
func where(nc *nats.Conn, inProcess nats.InProcessConnProvider) string {
	if inProcess == nil {
		return nc.ConnectedUrlRedacted()
	}
	if s, ok := inProcess.(*server.Server); ok && s.Addr() != nil {
		return "nats://" + s.Addr().String()
	}
	return "in-process"
}

func joinURLs(urls []string) string {
	out := urls[0]
	for _, u := range urls[1:] {
		out += "," + u
	}
	return out
}

// redact hides passwords in URLs for error messages.
func redact(urls []string) string {
	var out string
	for i, u := range urls {
		if i > 0 {
			out += ","
		}
		out += redactURL(u)
	}
	if out == "" {
		out = nats.DefaultURL
	}
	return out
}
