package fanout

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/durable"
	"github.com/relaydev/relay/shared/health"
	"github.com/relaydev/relay/shared/metrics"
	"github.com/relaydev/relay/shared/netguard"
	"github.com/relaydev/relay/shared/subjects"
	"github.com/relaydev/relay/shared/tierkit"
	"github.com/relaydev/relay/shared/wsframe"
)

// Sentinel errors.
var (
	// ErrInvalidOptions is returned (wrapped, with every problem) by New.
	ErrInvalidOptions = errors.New("fanout: invalid options")
	// ErrNATSDisconnected is reported by Ready while the NATS connection is down.
	ErrNATSDisconnected = tierkit.ErrNATSDisconnected
	// ErrAlreadyRun is returned by a second call to Run.
	ErrAlreadyRun = errors.New("fanout: Run called twice")
)

const (
	// maxCloseGrace is the longest a close handshake may take before the TCP
	// connection is cut: a client whose TCP window is full would otherwise
	// hold its socket open although it has been told to go.
	maxCloseGrace = time.Second
	// readHeaderTimeout bounds a client's request headers.
	readHeaderTimeout = 10 * time.Second
	// maxHeaderBytes is far above what a browser's upgrade request needs.
	maxHeaderBytes = 32 << 10
)

// Options configure a Server.
type Options struct {
	// Config holds the tier's settings (RELAY_FANOUT_*).
	Config config.Fanout
	// SubjectPrefix is RELAY_SUBJECT_PREFIX: channel C is read from
	// <prefix>.ch.C.
	SubjectPrefix string
	// ShutdownGrace is the whole budget for a graceful shutdown. Defaults to
	// tierkit.DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// NATS is owned by the Server from New on: New sets its async error
	// handler and Run drains it before returning.
	NATS *nats.Conn
	// Logger receives the tier's logs (the caller adds attributes such as
	// tier=fanout). Defaults to slog.Default() with tier=fanout.
	Logger *slog.Logger
	// Metrics is updated by the Server. Defaults to a set nobody serves.
	Metrics *metrics.Fanout
	// MetricsHandler is served at GET /metrics; nil leaves the route out.
	MetricsHandler http.Handler
	// Upstream, when set, is closed once the publishers feeding this
	// process have stopped and NATS has confirmed what they published (in
	// 'relay all': ingest.Server.Drained). Shutdown keeps the clients until
	// then, and until this connection has received and queued all of it,
	// so they get every message ingest accepted before 1001. Bounded by
	// three quarters of ShutdownGrace.
	Upstream <-chan struct{}
	// Auth checks the token of each upgrade; nil or disabled lets everyone
	// watch.
	Auth *auth.Authenticator
	// AuthCookie is the cookie an upgrade may carry its token in
	// (RELAY_AUTH_COOKIE); empty means DefaultAuthCookie.
	AuthCookie string
	// QueryToken also accepts ?token= (RELAY_AUTH_QUERY_TOKEN).
	QueryToken bool
	// Durable says which channels are durable (RELAY_DURABLE_CHANNELS):
	// they are read from its JetStream stream, which must exist. Nil: none.
	Durable *durable.Stream
	// DurableRing is RELAY_DURABLE_RING: recent messages kept per durable
	// channel.
	DurableRing int
	// NoHealthRoutes leaves /healthz and /readyz off the public address
	// (RELAY_ADMIN_ADDR serves them); Ready still reports readiness.
	NoHealthRoutes bool
	// Control is talking back: which channels' clients may write to their
	// senders, at what rate and size (RELAY_CONTROL_CHANNELS, ...).
	Control config.Control
}

// Server is the fanout tier: one HTTP server for WebSockets, the demo page,
// health and metrics.
type Server struct {
	cfg     config.Fanout
	grace   time.Duration
	nc      *nats.Conn
	log     *slog.Logger
	m       *metrics.Fanout
	limits  clientLimits
	origins []string // lower-cased patterns

	auth       *auth.Authenticator
	authCookie string
	queryToken bool

	ln       net.Listener
	http     *http.Server
	mux      *http.ServeMux
	health   *health.Checker
	hub      *hub
	refusals *tierkit.LogLimiter
	upstream <-chan struct{}
	guard    *guard
	pinger   *wsframe.Pinger // pings every client (nil: RELAY_FANOUT_PING_INTERVAL=0)
	mapper   subjects.Mapper
	ctl      controlConfig // talking back
	presence *presence     // sender counts from ingest
	stop     chan struct{} // closed at shutdown: background loops end

	active atomic.Int64 // upgrades in progress and connected clients, for MaxConnections
	ran    atomic.Bool

	// wg counts upgrade handlers from track to their return; a handler
	// covers its client's goroutines.
	wg           sync.WaitGroup
	mu           sync.Mutex
	shuttingDown bool
	clients      map[*client]struct{}
}

// New validates o, binds the listener on o.Config.Addr (so a port in use
// fails the start here) and sets the async error handler of o.NATS, through
// which NATS reports slow consumers.
func New(o Options) (*Server, error) {
	if err := validate(o); err != nil {
		return nil, err
	}
	tierkit.Defaults("fanout", &o.Logger, &o.ShutdownGrace)
	if o.Metrics == nil {
		o.Metrics = metrics.New().Fanout
	}
	mapper, _ := subjects.NewMapper(o.SubjectPrefix) // checked by validate
	log := o.Logger
	cfg := o.Config

	page, err := renderPage(pageConfig{PublicIngestAddr: cfg.PublicIngestAddr, Auth: o.Auth.Enabled()})
	if err != nil {
		return nil, fmt.Errorf("fanout: demo page: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("fanout: listen %s: %w", cfg.Addr, err)
	}

	s := &Server{
		cfg:   cfg,
		grace: o.ShutdownGrace,
		nc:    o.NATS,
		log:   log,
		m:     o.Metrics,
		limits: clientLimits{
			queueMsgs:  cfg.ClientQueue,
			queueBytes: cfg.ClientQueueBytes,
			maxBytes:   cfg.ClientQueueMaxBytes,
			// Judged before the write timeout would fail a stuck write
			// (1011), so a stuck reader is told it is a slow consumer.
			slowGrace:    min(cfg.SlowGrace, cfg.WriteTimeout/2),
			writeTimeout: cfg.WriteTimeout,
			closeGrace:   min(maxCloseGrace, cfg.WriteTimeout),
		},
		ln:       ln,
		mux:      http.NewServeMux(),
		refusals: tierkit.NewLogLimiter(time.Second),
		clients:  make(map[*client]struct{}),
		upstream: o.Upstream,
		// A client that does not answer a ping within the write timeout
		// is closed with 1008.
		pinger:   wsframe.NewPinger(cfg.PingInterval, cfg.WriteTimeout),
		mapper:   mapper,
		ctl:      controlConfig{patterns: o.Control.Patterns(), rate: o.Control.FanoutControlRate, max: o.Control.FanoutControlMax},
		presence: newPresence(mapper, log),
		stop:     make(chan struct{}),

		auth:       o.Auth,
		authCookie: cmp.Or(o.AuthCookie, DefaultAuthCookie),
		queryToken: o.QueryToken,
	}
	for _, p := range cfg.AllowedOrigins {
		s.origins = append(s.origins, strings.ToLower(strings.TrimSpace(p)))
	}
	if s.guard, err = newGuard(cfg, s); err != nil {
		ln.Close()
		return nil, fmt.Errorf("fanout: %w", err)
	}
	// tcp -> PROXY header (trusted proxies only) -> header-timeout watch -> TLS.
	if len(s.guard.proxies) > 0 {
		s.ln = netguard.ProxyListener(s.ln, s.guard.proxies)
	}
	s.ln = watchListener{Listener: s.ln}
	if s.guard.tls != nil {
		s.ln = tls.NewListener(s.ln, s.guard.tls)
	}
	s.hub = newHub(o.NATS, mapper, o.Metrics, log, cfg.SubPendingMsgs, cfg.SubPendingBytes, cfg.WriteTimeout)
	if o.Durable.Enabled() {
		js, err := jetstream.New(o.NATS)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("fanout: jetstream: %w", err)
		}
		s.hub.stream, s.hub.js, s.hub.ringSize = o.Durable, js, o.DurableRing
		s.hub.readers = make(chan struct{}, maxStreamReaders)
	}
	if s.ctl.max <= 0 {
		s.ctl.max = 65536
	}
	if mp := o.NATS.MaxPayload(); mp > 0 && int64(s.ctl.max) > mp {
		ln.Close()
		return nil, fmt.Errorf("fanout: RELAY_FANOUT_CONTROL_MAX_MESSAGE=%d does not fit the NATS server's max payload of %d bytes", s.ctl.max, mp)
	}
	s.presence.onChange = s.notifySenders
	if err := s.presence.subscribe(o.NATS, cfg.WriteTimeout); err != nil {
		ln.Close()
		return nil, err
	}
	if len(s.ctl.patterns) > 0 && !o.Auth.Enabled() {
		log.Warn("fanout: RELAY_CONTROL_CHANNELS with RELAY_AUTH=off: anyone who can reach the fanout may write to those channels' senders",
			"patterns", s.ctl.patterns)
	}
	s.health = health.New(tierkit.NATSReady(o.NATS))
	s.routes(page, o.MetricsHandler, !o.NoHealthRoutes)
	s.http = &http.Server{
		Handler:           s.guard.wrap(s, s.mux),
		ConnState:         s.connState,
		ConnContext:       connContext,
		ReadHeaderTimeout: readHeaderTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// The slow-consumer report is how NATS says it dropped messages for one
	// of our subscriptions, and a disconnect means messages published
	// meanwhile never reach us: both must close the affected clients. The
	// handlers already set (logging, metrics) keep running first.
	prevErr, prevDisc := o.NATS.Opts.AsyncErrorCB, o.NATS.Opts.DisconnectedErrCB
	o.NATS.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if prevErr != nil && !errors.Is(err, nats.ErrSlowConsumer) {
			prevErr(nc, sub, err)
		}
		s.natsError(nc, sub, err)
	})
	o.NATS.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		if prevDisc != nil {
			prevDisc(nc, err)
		}
		s.natsLost(err)
	})
	return s, nil
}

// validate reports every problem with o, the way ingest's does.
func validate(o Options) error {
	errs := tierkit.Check(o.NATS, o.SubjectPrefix)
	if err := o.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.DurableRing < 0 {
		errs = append(errs, fmt.Errorf("DurableRing=%d: must not be negative", o.DurableRing))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
}

//go:embed web
var webFS embed.FS

// pageConfig is what the demo page learns from the server, injected as JSON
// into web/index.html ({{.}} in a script element): the hook through which a
// fuller page gets its settings.
type pageConfig struct {
	PublicIngestAddr string `json:"publicIngestAddr"`
	// Auth tells the page that tokens are checked, so it offers a token field.
	Auth bool `json:"auth,omitempty"`
}

func renderPage(pc pageConfig) ([]byte, error) {
	t, err := template.ParseFS(webFS, "web/index.html")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, pc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// pageCSP lets the demo page load only its own files and open WebSockets:
// it shows untrusted messages, so an injection must not be able to run.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// staticHandler serves web/static/ (the page's style, script and icon) from
// memory. The files change only with the binary, so each has a content-hash
// ETag: browsers revalidate (no-cache) and get 304 Not Modified.
func staticHandler() http.Handler {
	type file struct {
		body        []byte
		etag, ctype string
	}
	files := map[string]file{}
	entries, _ := fs.ReadDir(webFS, "web/static") // embedded: cannot fail
	for _, e := range entries {
		b, _ := webFS.ReadFile("web/static/" + e.Name())
		sum := sha256.Sum256(b)
		ctype := map[string]string{
			".css": "text/css; charset=utf-8",
			".js":  "text/javascript; charset=utf-8",
			".svg": "image/svg+xml",
		}[path.Ext(e.Name())]
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		files[e.Name()] = file{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ctype}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[strings.TrimPrefix(r.URL.Path, "/static/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

func (s *Server) routes(page []byte, metricsHandler http.Handler, healthRoutes bool) {
	s.mux.HandleFunc("GET /ws/{channel}", s.serveWS)
	s.mux.HandleFunc("GET /api/channels/{channel}", s.serveChannelInfo)
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", pageCSP)
		w.Write(page)
	})
	s.mux.Handle("GET /static/", staticHandler())
	if healthRoutes {
		s.health.Register(s.mux)
	}
	if metricsHandler != nil {
		s.mux.Handle("GET /metrics", metricsHandler)
	}
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handler serves every route of the Server, behind the Host and address
// checks; Run serves it on Addr.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Ready returns nil while NATS is connected and the Server is not draining.
func (s *Server) Ready() error { return s.health.Ready() }

// Run serves until ctx is done, then shuts down gracefully within
// ShutdownGrace: /readyz answers 503 and new upgrades are refused, the
// listener closes, every client gets 1001 Going Away, the client goroutines
// are waited for, and the NATS connection is drained. It returns nil after a
// clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	s.log.Info("fanout listening", "addr", s.ln.Addr().String(), "tls", s.guard.tls != nil)
	served := make(chan error, 1)
	go func() { served <- s.http.Serve(s.ln) }()
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		s.presence.run(s.stop, s.hub.deliveredByChannel)
	}()
	defer func() { <-swept }()

	var serveErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		served <- err
		serveErr = fmt.Errorf("fanout: serve: %w", err)
	}
	s.shutdown()
	if err := <-served; serveErr == nil && !errors.Is(err, http.ErrServerClosed) {
		serveErr = fmt.Errorf("fanout: serve: %w", err)
	}
	return serveErr
}

// shutdown runs the ordered shutdown once, within the grace period.
func (s *Server) shutdown() {
	start := time.Now()
	deadline := start.Add(s.grace)

	// 1. Readiness fails and new upgrades are refused from here on.
	s.health.SetDraining()
	close(s.stop)
	s.mu.Lock()
	s.shuttingDown = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	s.log.Info("fanout draining", "clients", len(clients), "grace", s.grace)

	// 2. Stop accepting. Shutdown does not wait for hijacked connections,
	// only for upgrades still in progress, which are bounded.
	httpCtx, cancel := context.WithDeadline(context.Background(), start.Add(s.grace/4))
	if err := s.http.Shutdown(httpCtx); err != nil {
		s.log.Warn("http shutdown incomplete; closing connections", "err", err)
		s.http.Close()
	}
	cancel()

	// 2b. Publishers of this process (ingest in 'relay all') may still be
	// publishing what their senders wrote before the signal: keep the
	// clients until every accepted message has reached their queues.
	if s.upstream != nil {
		s.awaitUpstream(start.Add(s.grace * 3 / 4))
	}

	// 3. Close every client, spread out (leaving at least half of what
	// remains for the handshakes); an upgrade that registers later closes
	// itself.
	spread := min(s.cfg.DrainSpread, s.grace/4, time.Until(deadline.Add(-s.grace/4))/2)
	s.closeSpread(clients, max(spread, 0))

	// 4. Wait for them; each cuts its TCP connection after closeGrace at
	// the latest, so only a stuck client would use up the budget.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	natsBudget := s.grace / 4
	t := time.NewTimer(time.Until(deadline) - natsBudget)
	select {
	case <-done:
	case <-t.C:
		// Cut with the close frame where nothing holds the connection, so
		// a client sees 1001 rather than 1006 (see wsframe.Conn.Cut).
		s.mu.Lock()
		n, unclosed, sent := 0, 0, 0
		for c := range s.clients {
			c.mu.Lock()
			conn, closed := c.conn, c.closed
			c.mu.Unlock()
			if conn == nil {
				continue
			}
			n++
			if !closed {
				unclosed++
			}
			if conn.Cut(uint16(websocket.StatusGoingAway), reasonShutdown, 0) {
				sent++
			}
		}
		s.mu.Unlock()
		s.log.Warn("clients still open at the shutdown deadline; cut them", "clients", n,
			"not_yet_closed", unclosed, "close_frame_sent_at_cut", sent)
		// Cut connections fail every pending operation at once.
		t.Reset(natsBudget / 2)
		select {
		case <-done:
		case <-t.C:
			s.log.Warn("client goroutines still running after the cut; draining NATS anyway")
		}
	}
	t.Stop()

	// 5. Drain NATS: unsubscribe, finish callbacks in flight, close.
	if err := s.nc.Drain(); err != nil {
		// Closed already, or not connected: nothing can be flushed anyway.
		if !errors.Is(err, nats.ErrConnectionClosed) {
			s.log.Warn("nats drain failed; closing", "err", err)
		}
		s.nc.Close()
	}
	for !s.nc.IsClosed() {
		if time.Now().After(deadline) {
			s.log.Warn("nats drain not finished at the shutdown deadline; closing")
			s.nc.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.log.Info("fanout stopped", "took", time.Since(start).Round(time.Millisecond))
}

// closeSpread closes clients with 1001 evenly over spread rather than all
// at once: each reconnects at once (to another replica, since /readyz
// fails here), and ten thousand reconnects in the same millisecond are a
// storm the remaining replicas would have to absorb. Clients not yet closed
// keep receiving messages meanwhile.
func (s *Server) closeSpread(clients []*client, spread time.Duration) {
	start := time.Now()
	for i, c := range clients {
		due := start.Add(spread * time.Duration(i) / time.Duration(len(clients)))
		// Sleeping per client would cost a timer each at 10,000 clients;
		// closing a few milliseconds' worth together is spread enough.
		if wait := time.Until(due); wait > 5*time.Millisecond {
			time.Sleep(wait)
		}
		c.close(websocket.StatusGoingAway, reasonShutdown, disconnectShutdown)
	}
	if len(clients) > 0 {
		s.log.Info("clients closed", "clients", len(clients), "spread", spread, "took", time.Since(start).Round(time.Millisecond))
	}
}

// awaitUpstream waits (until by at the latest) for s.upstream to close,
// then for this connection to receive everything NATS took before that (a
// flush round trip: the server sends us all earlier messages before the
// PONG) and for the subscriptions to hand all of it to the clients' queues
// (a barrier runs after every message already received is processed).
func (s *Server) awaitUpstream(by time.Time) {
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case <-s.upstream:
	case <-t.C:
		s.log.Warn("publishers still draining at the deadline; closing clients", "waited", s.grace*3/4)
		return
	}
	if err := s.nc.FlushTimeout(max(time.Until(by), 10*time.Millisecond)); err != nil {
		s.log.Warn("nats flush before closing clients failed; they may miss the last messages", "err", err)
		return
	}
	done := make(chan struct{})
	if err := s.nc.Barrier(func() { close(done) }); err != nil {
		return
	}
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("subscriptions still delivering at the deadline; closing clients")
	}
}

// track counts an upgrade handler unless shutdown has begun.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown {
		return false
	}
	s.wg.Add(1)
	return true
}

// register lists a connected client for shutdown; false once shutdown has
// begun (the caller closes the client itself).
func (s *Server) register(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c] = struct{}{}
	return !s.shuttingDown
}

func (s *Server) unregister(c *client) {
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
}

// natsLost closes every client when the NATS connection drops (unless
// configured otherwise): messages published until it reconnects never reach
// this server, and a receiver must not be left connected with a silent gap.
// 1012 Service Restart tells it to reconnect; the load balancer sends it to a
// ready replica, since /readyz fails here until NATS is back.
func (s *Server) natsLost(err error) {
	s.mu.Lock()
	clients := make([]*client, 0, len(s.clients))
	if !s.shuttingDown && s.cfg.CloseOnNATSLoss {
		for c := range s.clients {
			// A durable channel's client misses nothing: its channel's
			// ordered consumer resumes after the last message it delivered
			// once NATS is back, and what was stored meanwhile follows.
			if !c.isDurable() {
				clients = append(clients, c)
			}
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range clients {
		if c.close(websocket.StatusServiceRestart, reasonNATSLost, disconnectNATSLost) {
			n++
		}
	}
	if n > 0 {
		s.log.Warn("nats connection lost: closed clients, they may have missed messages", "clients", n, "err", err)
	}
}

// natsError is the NATS connection's async error handler.
func (s *Server) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		s.hub.slowSubscription(sub)
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	s.log.Warn("nats async error", "subject", subject, "err", err)
}
