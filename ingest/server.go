// Package ingest is relay's TCP ingest tier: it accepts raw TCP senders on the
// listeners of RELAY_INGEST_LISTENERS, frames each byte stream into messages
// (line, raw or len32) and publishes them, in order, to the channel's NATS
// subject. When NATS cannot take more it stops reading, so TCP flow control
// pushes back on the sender instead of memory growing. See README.md.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/health"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tierkit"
)

// ErrInvalidOptions is returned (wrapped, with every problem) by New.
var ErrInvalidOptions = errors.New("ingest: invalid options")

// headerRoom is what the Relay-Format header adds to a NATS payload.
const headerRoom = 64

// Options configure New.
type Options struct {
	Config        config.Ingest
	SubjectPrefix string
	// ShutdownGrace bounds the whole graceful shutdown. Defaults to
	// tierkit.DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// NATS is owned by the Server from now on: Run flushes and closes it.
	NATS *nats.Conn
	// Logger defaults to slog.Default() with tier=ingest.
	Logger *slog.Logger
	// Metrics is updated by the Server. Defaults to a set nobody serves.
	Metrics        *metrics.Ingest
	MetricsHandler http.Handler // served at GET /metrics; may be nil
	// Durable says which channels are durable (published to JetStream with
	// acks); nil or disabled: none. The stream must exist (Ensure).
	Durable *durable.Stream
	// Auth checks handshake tokens; nil or disabled lets everyone send.
	Auth *auth.Authenticator
	// Control is talking back: which channels' senders receive control
	// messages, their queue, and the presence refresh interval.
	Control config.Control
}

// Server is the ingest tier.
type Server struct {
	cfg     config.Ingest
	grace   time.Duration
	nc      *nats.Conn
	log     *slog.Logger
	m       *metrics.Ingest
	mapper  subjects.Mapper
	durable *durable.Stream     // which channels are durable
	js      jetstream.JetStream // publishes durable messages; nil without durable channels
	auth    *auth.Authenticator
	health  *health.Checker
	lns     []*listener
	httpLn  net.Listener
	httpSrv *http.Server
	guard   *guard
	router  *router // presence and control messages of the senders here

	slots    chan struct{} // one per allowed concurrent connection
	refusals *tierkit.LogLimiter

	mu     sync.Mutex
	conns  map[*senderConn]struct{}
	closed bool
	wg     sync.WaitGroup // connection goroutines

	// hardCtx ends when the shutdown grace runs out; it bounds publish retries.
	hardCtx    context.Context
	hardCancel context.CancelFunc
	hardAt     atomic.Int64 // unix nanoseconds of the hard deadline, once shutdown began

	// back is closed (and replaced) each time NATS reconnects: senders held
	// by an outage wait on it.
	backMu sync.Mutex
	back   chan struct{}

	k            *confirmer // which publishes NATS has confirmed; detects a stalled server
	stopConfirm  chan struct{}
	drained      chan struct{} // closed once shutdown has published and flushed what it read
	shutdownOnce sync.Once
}

// New validates the options and binds every listener, so a port in use
// fails the start here rather than later.
func New(o Options) (*Server, error) {
	if o.Config.OutageHold == 0 {
		o.Config.OutageHold = 10 * time.Second
	}
	if o.Config.DurableInFlight == 0 {
		o.Config.DurableInFlight = 4096
	}
	// Options are checked and defaulted the way fanout.New does (tierkit).
	errs := tierkit.Check(o.NATS, o.SubjectPrefix)
	if err := o.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	tierkit.Defaults("ingest", &o.Logger, &o.ShutdownGrace)
	if o.Metrics == nil {
		o.Metrics = metrics.New().Ingest
	}
	mapper, _ := subjects.NewMapper(o.SubjectPrefix) // checked above
	if o.Auth.Enabled() {
		var errs []error
		for _, spec := range o.Config.Listeners {
			errs = append(errs, spec.CheckAuth())
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
	}
	if mp := o.NATS.MaxPayload(); mp > 0 && int64(o.Config.MaxMessage)+headerRoom > mp {
		return nil, fmt.Errorf("ingest: RELAY_INGEST_MAX_MESSAGE=%d does not fit the NATS server's max payload of %d bytes (headers need %d)", o.Config.MaxMessage, mp, headerRoom)
	}
	hardCtx, hardCancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:         o.Config,
		grace:       o.ShutdownGrace,
		nc:          o.NATS,
		log:         o.Logger,
		m:           o.Metrics,
		mapper:      mapper,
		durable:     o.Durable,
		auth:        o.Auth,
		slots:       make(chan struct{}, o.Config.MaxConnections),
		refusals:    tierkit.NewLogLimiter(time.Second),
		conns:       map[*senderConn]struct{}{},
		hardCtx:     hardCtx,
		hardCancel:  hardCancel,
		back:        make(chan struct{}),
		k:           newConfirmer(o.NATS),
		stopConfirm: make(chan struct{}),
		drained:     make(chan struct{}),
	}
	s.router = newRouter(o.NATS, mapper, o.Logger, o.Metrics, o.Control)
	if o.Durable.Enabled() {
		var err error
		if s.js, err = newJetStream(o.NATS, o.Config.DurableInFlight); err != nil {
			hardCancel()
			return nil, fmt.Errorf("ingest: %w", err)
		}
	}
	if o.NATS.Opts.ReconnectBufSize >= 0 {
		o.Logger.Warn("ingest: the NATS connection buffers publishes while disconnected; " +
			"messages accepted during an outage would be replayed as a burst on reconnect (connect with natsconn's NoReconnectBuffer)")
	}
	// Senders held by an outage resume as soon as NATS is back. Handlers
	// already set (logging, metrics) keep running first.
	prevReconnect := o.NATS.Opts.ReconnectedCB
	o.NATS.SetReconnectHandler(func(nc *nats.Conn) {
		if prevReconnect != nil {
			prevReconnect(nc)
		}
		s.backMu.Lock()
		close(s.back)
		s.back = make(chan struct{})
		s.backMu.Unlock()
	})
	var err error
	if s.guard, err = newGuard(o.Config, o.Config.Listeners, s); err != nil {
		hardCancel()
		return nil, err
	}
	s.health = health.New(tierkit.NATSReady(o.NATS))
	keepAlive := o.Config.KeepAlive
	if keepAlive == 0 {
		keepAlive = -1 // net.ListenConfig: negative disables keepalive
	}
	lc := net.ListenConfig{KeepAlive: keepAlive}
	for _, spec := range o.Config.Listeners {
		ln, err := lc.Listen(context.Background(), "tcp", spec.Addr)
		if err != nil {
			s.closeListeners()
			hardCancel()
			return nil, fmt.Errorf("ingest: listen %s: %w", spec, err)
		}
		s.lns = append(s.lns, &listener{Listener: ln, spec: spec})
	}
	if o.Config.HTTPAddr != "" {
		s.httpLn, err = net.Listen("tcp", o.Config.HTTPAddr)
		if err != nil {
			s.closeListeners()
			hardCancel()
			return nil, fmt.Errorf("ingest: listen http %s: %w", o.Config.HTTPAddr, err)
		}
		mux := http.NewServeMux()
		s.health.Register(mux)
		if o.MetricsHandler != nil {
			mux.Handle("GET /metrics", o.MetricsHandler)
		}
		s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
	}
	return s, nil
}

// Addrs returns the bound sender listeners' addresses, in config order.
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr()
	}
	return out
}

// HTTPAddr returns the health/metrics address, or nil when disabled.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// Ready returns nil while NATS is connected and the server is not draining.
func (s *Server) Ready() error { return s.health.Ready() }

// Drained is closed once shutdown has stopped reading from senders,
// published what it read and NATS has confirmed it (a flush round trip), or
// the grace ran out. In 'relay all' the fanout waits for it before closing
// its clients, so they receive every message ingest accepted.
func (s *Server) Drained() <-chan struct{} { return s.drained }

// waitUpstream waits until NATS is connected again, until (an outage hold
// ending), or the shutdown deadline.
func (s *Server) waitUpstream(until time.Time) error {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		s.backMu.Lock()
		back := s.back
		s.backMu.Unlock()
		if s.nc.IsConnected() && !s.k.stalled() {
			return nil
		}
		left := time.Until(until)
		if left <= 0 {
			return errors.New("NATS still unreachable after RELAY_INGEST_OUTAGE_HOLD")
		}
		// The reconnect handler wakes us; the poll covers a publish that
		// failed for another reason while the connection stayed up.
		poll.Reset(min(left, confirmEvery))
		select {
		case <-back:
		case <-poll.C:
		case <-s.hardCtx.Done():
			return errors.New("NATS still unreachable at the shutdown deadline")
		}
	}
}

// flushBy is when a shutdown flush must be done: the hard deadline.
func (s *Server) flushBy() time.Time {
	if at := s.hardAt.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Now().Add(s.grace / 4)
}

// Run accepts senders until ctx ends, then shuts down gracefully: readiness
// fails, listeners close, what senders already wrote is read and published,
// NATS is flushed and closed. It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, len(s.lns)+1)
	var loops sync.WaitGroup
	loops.Go(func() { s.k.run(s.stopConfirm) })
	loops.Go(func() { s.router.run(s.stopConfirm) })
	for _, ln := range s.lns {
		s.log.Info("ingest listening", "addr", ln.Addr().String(), "channel", ln.spec.Channel, "framing", string(ln.spec.Framing))
		loops.Go(func() {
			if err := s.acceptLoop(ln); err != nil {
				errc <- err
			}
		})
	}
	if s.httpSrv != nil {
		s.log.Info("ingest http listening", "addr", s.httpLn.Addr().String())
		loops.Go(func() {
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("ingest: http: %w", err)
			}
		})
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.shutdown()
	loops.Wait()
	return runErr
}

// shutdown is ordered and idempotent: readiness 503 -> stop accepting ->
// read what senders already wrote -> wait for connections -> flush NATS.
func (s *Server) shutdown() {
	s.shutdownOnce.Do(func() {
		deadline := time.Now().Add(s.grace)
		s.health.SetDraining()
		s.log.Info("ingest shutting down", "grace", s.grace)
		s.closeListeners()

		// Bytes a sender already wrote sit in our socket buffer and arrive
		// within a moment; give each connection a short window to read
		// them, then stop. A sender still streaming gets -ERR.
		drainRead := min(time.Second, s.grace/4)
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.stopReading(time.Now().Add(drainRead))
		}
		s.mu.Unlock()

		// Publishes blocked on backpressure may retry until the hard
		// deadline, keeping a quarter of the grace for the NATS flush.
		hardAt := time.Until(deadline) * 3 / 4
		s.hardAt.Store(time.Now().Add(hardAt).UnixNano())
		timer := time.AfterFunc(hardAt, s.hardCancel)
		waitTimeout(&s.wg, hardAt+time.Second)
		timer.Stop()
		s.hardCancel()
		// The senders' departures, announced before NATS is flushed.
		s.router.flush()

		if !s.nc.IsConnected() {
			s.log.Warn("ingest: NATS not connected at shutdown; messages published since its last confirmation may be lost")
		} else if err := s.nc.FlushTimeout(max(time.Until(deadline), 100*time.Millisecond)); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			s.log.Warn("ingest: NATS flush at shutdown failed", "err", err)
		}
		close(s.drained)
		close(s.stopConfirm)
		s.nc.Close()
		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), max(time.Until(deadline), 100*time.Millisecond))
			s.httpSrv.Shutdown(ctx)
			cancel()
		}
		s.log.Info("ingest stopped")
	})
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.httpLn != nil && s.httpSrv == nil {
		s.httpLn.Close()
	}
}

// track registers a connection; it fails once shutdown has begun.
func (s *Server) track(c *senderConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *senderConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
