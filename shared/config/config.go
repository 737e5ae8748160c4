// Package config holds relay's configuration: one struct per tier, read from
// RELAY_* environment variables with github.com/kelseyhightower/envconfig,
// validated once at start with every problem reported together.
//
// Each field's `default` and `desc` tags are the documentation: `relay config`
// prints them and README.md's configuration table is generated from them
// (see Markdown), so the docs cannot drift from the code.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/subjects"
)

// Prefix is the environment variable prefix: RELAY_NATS_URL and so on.
const Prefix = "RELAY"

// Common settings are read by every role.
type Common struct {
	NATSURL        string        `envconfig:"NATS_URL" roles:"ingest,fanout" default:"nats://127.0.0.1:4222" desc:"comma-separated NATS server URLs (ignored by 'relay all', which embeds its own server)"`
	NATSRetry      time.Duration `envconfig:"NATS_RETRY_WINDOW" default:"30s" desc:"how long to keep retrying the first NATS connection before exiting non-zero"`
	SubjectPrefix  string        `envconfig:"SUBJECT_PREFIX" default:"relay" desc:"channel C travels on NATS subject <prefix>.ch.C"`
	LogLevel       string        `envconfig:"LOG_LEVEL" default:"info" desc:"log level: debug, info, warn, error"`
	LogFormat      string        `envconfig:"LOG_FORMAT" default:"text" desc:"log format: text or json"`
	ShutdownGrace  time.Duration `envconfig:"SHUTDOWN_GRACE" default:"20s" desc:"on SIGTERM, the longest relay takes to drain senders, close receivers and flush NATS before it exits (keep below the orchestrator's kill timeout)"`
	EmbeddedListen string        `envconfig:"NATS_LISTEN" roles:"all" default:"" desc:"'relay all' only: also serve the embedded NATS server on this host:port (e.g. 127.0.0.1:4222) so other NATS clients can publish; empty = in-process only"`
	// NATSPingInterval and NATSMaxPings bound how long a frozen or
	// blackholed NATS server goes unnoticed: at most interval x (pings + 1),
	// 12s by default.
	NATSPingInterval time.Duration `envconfig:"NATS_PING_INTERVAL" default:"4s" desc:"how often each tier pings its NATS server; a server that leaves RELAY_NATS_MAX_PINGS_OUTSTANDING pings unanswered is treated as lost (readiness 503, ingest stops reading, fanout closes watchers with 1012), so a frozen or blackholed NATS is noticed within interval x (pings + 1): 12s by default"`
	NATSMaxPings     int           `envconfig:"NATS_MAX_PINGS_OUTSTANDING" default:"2" desc:"unanswered NATS pings after which the connection is declared stale and replaced (see RELAY_NATS_PING_INTERVAL)"`

	AdminAddr  string `envconfig:"ADMIN_ADDR" default:"" desc:"when set, /metrics, /healthz and /readyz are served on this host:port (keep it off the public Service) and no longer on the public ports"`
	AdminPprof bool   `envconfig:"ADMIN_PPROF" default:"false" desc:"also serve Go's /debug/pprof/ on RELAY_ADMIN_ADDR (needs RELAY_ADMIN_ADDR)"`

	NATSCredsFile    string `envconfig:"NATS_CREDS_FILE" default:"" desc:"NATS credentials file (user JWT and nkey seed) for decentralised auth"`
	NATSNkeySeedFile string `envconfig:"NATS_NKEY_SEED_FILE" default:"" desc:"file holding an NATS nkey seed (SU...) to authenticate with"`
	NATSUser         string `envconfig:"NATS_USER" default:"" desc:"NATS user name; the password is read from RELAY_NATS_PASSWORD_FILE"`
	NATSPasswordFile string `envconfig:"NATS_PASSWORD_FILE" default:"" desc:"file holding the NATS password of RELAY_NATS_USER"`
	NATSTokenFile    string `envconfig:"NATS_TOKEN_FILE" default:"" desc:"file holding an NATS authentication token"`
	NATSTLSCAFile    string `envconfig:"NATS_TLS_CA_FILE" default:"" desc:"CA bundle (PEM) to verify the NATS servers' certificates; setting any RELAY_NATS_TLS_* file requires TLS"`
	NATSTLSCertFile  string `envconfig:"NATS_TLS_CERT_FILE" default:"" desc:"client certificate (PEM) for NATS servers that require one"`
	NATSTLSKeyFile   string `envconfig:"NATS_TLS_KEY_FILE" default:"" desc:"key (PEM) of RELAY_NATS_TLS_CERT_FILE"`

	// Talking back and presence (shared/config/control.go).
	ControlChannels []string      `envconfig:"CONTROL_CHANNELS" default:"" desc:"comma-separated channel patterns (* one token, a final > the rest) on which WebSocket clients may talk back: their data frames are written to the channel's TCP senders (with RELAY_AUTH=jwt only holders of the control permission); empty = none (client data is refused with 1003 everywhere)"`
	PresenceRefresh time.Duration `envconfig:"PRESENCE_REFRESH" default:"10s" desc:"how often ingest repeats each channel's sender count on <prefix>.ev.<channel> (arrivals and departures are announced within 20ms), so a fanout that restarts learns the counts; a count not repeated for 3 intervals is forgotten (an ingest that died)"`
}

// Ingest settings are read by 'relay ingest' and 'relay all'.
type Ingest struct {
	Listeners        Listeners     `envconfig:"INGEST_LISTENERS" default:":7070=default/line,:7071=*/line" desc:"comma-separated ADDR=CHANNEL/FRAMING[;OPTION]...; CHANNEL * = handshake listener; FRAMING line, raw or len32; OPTIONs tls, mtls, allow=CIDR|..., deny=CIDR|..., proxy, public, idle=DURATION"`
	HTTPAddr         string        `envconfig:"INGEST_HTTP_ADDR" default:":8081" desc:"ingest /healthz, /readyz and /metrics (in 'relay all' the fanout address serves them too); empty disables"`
	MaxMessage       int           `envconfig:"INGEST_MAX_MESSAGE" default:"65536" desc:"largest message in bytes; at most the NATS server's max payload. A larger line or len32 frame gets -ERR and the connection is closed; raw framing splits at this size"`
	HandshakeTimeout time.Duration `envconfig:"INGEST_HANDSHAKE_TIMEOUT" default:"10s" desc:"a handshake listener's sender must send its CHANNEL line within this time"`
	KeepAlive        time.Duration `envconfig:"INGEST_TCP_KEEPALIVE" default:"30s" desc:"TCP keepalive period for sender connections (0 disables), so dead peers are noticed"`
	MaxConnections   int           `envconfig:"INGEST_MAX_CONNECTIONS" default:"10000" desc:"most concurrent sender connections per process; more get -ERR and are closed"`
	ReadBuffer       int           `envconfig:"INGEST_READ_BUFFER" default:"32768" desc:"bytes buffered per sender connection while framing"`
	OutageHold       time.Duration `envconfig:"INGEST_OUTAGE_HOLD" default:"10s" desc:"while NATS is unreachable ingest accepts nothing (it stops reading, so TCP pushes back on senders); a sender held this long gets '-ERR upstream unavailable: N messages accepted' and is closed"`
	TextHeader       bool          `envconfig:"INGEST_TEXT_HEADER" default:"false" desc:"also send the NATS header Relay-Format: text with text messages (binary ones always carry Relay-Format: binary); off, text travels without a header, which the contract reads as text, and ingest publishes about twice as fast"`
	DurableInFlight  int           `envconfig:"INGEST_DURABLE_IN_FLIGHT" default:"4096" desc:"durable channels: most messages one ingest process has published and the stream has not yet acknowledged (a sender connection: at most 256 of them and 1 MiB); at the bound ingest stops reading, so TCP pushes back"`

	MaxConnectionsPerIP int     `envconfig:"INGEST_MAX_CONNECTIONS_PER_IP" default:"100" desc:"most concurrent sender connections from one client address (IPv6: per /64); more get -ERR rate limited. 0 = no per-address cap. Left unset, it is at most half of RELAY_INGEST_MAX_CONNECTIONS, so one address cannot hold every slot"`
	ConnectRatePerIP    string  `envconfig:"INGEST_CONNECT_RATE_PER_IP" default:"100/10s" desc:"new sender connections one client address may open, as N/DURATION (a token bucket of N refilled over DURATION); over it: -ERR rate limited. Empty = no limit"`
	MaxRate             float64 `envconfig:"INGEST_MAX_RATE" default:"0" desc:"most messages per second one sender connection may publish; past it ingest reads that sender more slowly (TCP pushes back), nothing is dropped. 0 = unlimited"`
	ProxyTrusted        string  `envconfig:"INGEST_PROXY_TRUSTED" default:"" desc:"comma-separated CIDRs of proxies whose PROXY protocol header a ;proxy listener believes; needed by every ;proxy listener"`
	TLSCertFile         string  `envconfig:"INGEST_TLS_CERT_FILE" default:"" desc:"certificate (PEM, with chain) of ;tls and ;mtls listeners; re-read when the file changes"`
	TLSKeyFile          string  `envconfig:"INGEST_TLS_KEY_FILE" default:"" desc:"key (PEM) of RELAY_INGEST_TLS_CERT_FILE"`
	IngestControlQueue  int     `envconfig:"INGEST_CONTROL_QUEUE" default:"256" desc:"control messages queued per TCP sender (and at most RELAY_INGEST_CONTROL_QUEUE_BYTES); a sender that does not read them has the newest dropped and counted (relay_ingest_control_messages_total{result=\"dropped\"}), never slowing other senders or its own sending"`
	IngestControlBytes  int     `envconfig:"INGEST_CONTROL_QUEUE_BYTES" default:"1048576" desc:"bytes of control messages queued per TCP sender (1 KiB to 256 MiB); one message however large is always taken into an empty queue. Raise it for senders that take large bursts of control messages"`
	TLSClientCAFile     string  `envconfig:"INGEST_TLS_CLIENT_CA_FILE" default:"" desc:"CA bundle (PEM) that ;mtls listeners verify sender certificates against; re-read when the file changes"`
}

// Fanout settings are read by 'relay fanout' and 'relay all'.
type Fanout struct {
	Addr                string        `envconfig:"FANOUT_ADDR" default:":8080" desc:"HTTP address: /ws/{channel}, the demo page /, /healthz, /readyz, /metrics"`
	ClientQueue         int           `envconfig:"FANOUT_CLIENT_QUEUE" default:"1048576" desc:"most messages a WebSocket client may fall behind by (a backstop far above what the byte bounds let small messages reach); past it: 1008 'slow consumer'"`
	ClientQueueBytes    int           `envconfig:"FANOUT_CLIENT_QUEUE_BYTES" default:"8388608" desc:"byte budget of a WebSocket client's queue (payload + 64 bytes per message); a client over it must keep draining: no write completed for RELAY_FANOUT_SLOW_GRACE closes it with 1008 'slow consumer'"`
	ClientQueueMaxBytes int           `envconfig:"FANOUT_CLIENT_QUEUE_MAX_BYTES" default:"33554432" desc:"hard cap on a WebSocket client's queue (payload + 64 bytes per message), however fast it drains; past it: 1008 'slow consumer' at once"`
	SlowGrace           time.Duration `envconfig:"FANOUT_SLOW_GRACE" default:"5s" desc:"how long a client over RELAY_FANOUT_CLIENT_QUEUE_BYTES may go without completing a write before it is closed with 1008 (at most half the write timeout is used)"`
	AllowedOrigins      []string      `envconfig:"FANOUT_ALLOWED_ORIGINS" default:"" desc:"comma-separated Origin host patterns (path.Match, e.g. *.example.com) allowed to open WebSockets; empty = same origin only; * = any"`
	PingInterval        time.Duration `envconfig:"FANOUT_PING_INTERVAL" default:"30s" desc:"WebSocket ping period; a client that does not answer within the write timeout is closed (0 disables pings)"`
	WriteTimeout        time.Duration `envconfig:"FANOUT_WRITE_TIMEOUT" default:"10s" desc:"deadline for one write (or ping) to a WebSocket client; past it the client is closed"`
	MaxConnections      int           `envconfig:"FANOUT_MAX_CONNECTIONS" default:"100000" desc:"most concurrent WebSocket clients per process; more get HTTP 503"`
	SubPendingMsgs      int           `envconfig:"FANOUT_SUB_PENDING_MSGS" default:"262144" desc:"messages the fanout's NATS subscription may buffer before NATS reports a slow consumer (the channel's clients are then closed); with small messages about as much memory as RELAY_FANOUT_SUB_PENDING_BYTES"`
	SubPendingBytes     int           `envconfig:"FANOUT_SUB_PENDING_BYTES" default:"67108864" desc:"bytes the fanout's NATS subscription may buffer before NATS reports a slow consumer"`
	DrainSpread         time.Duration `envconfig:"FANOUT_DRAIN_SPREAD" default:"5s" desc:"on shutdown, WebSocket clients are closed with 1001 evenly over this long, so they do not all reconnect to the other replicas at once (at most a quarter of RELAY_SHUTDOWN_GRACE is used; 0: all at once)"`
	CloseOnNATSLoss     bool          `envconfig:"FANOUT_CLOSE_ON_NATS_LOSS" default:"true" desc:"when the fanout's NATS connection drops, close its clients with 1012 so they know messages may have been missed (false: keep them connected through the gap)"`
	PublicIngestAddr    string        `envconfig:"FANOUT_PUBLIC_INGEST_ADDR" default:"" desc:"host:port of the ingest handshake listener as users reach it, shown on the demo page (empty: this host, first handshake listener's port)"`

	MaxConnectionsPerIP int      `envconfig:"FANOUT_MAX_CONNECTIONS_PER_IP" default:"1000" desc:"most concurrent WebSocket clients from one client address (IPv6: per /64); more are closed with 4429. 0 = no per-address cap. Left unset, it is at most half of RELAY_FANOUT_MAX_CONNECTIONS"`
	ConnectRatePerIP    string   `envconfig:"FANOUT_CONNECT_RATE_PER_IP" default:"100/10s" desc:"WebSocket upgrades one client address may make, as N/DURATION (token bucket); over it: close 4429. Empty = no limit"`
	AllowedHosts        []string `envconfig:"FANOUT_ALLOWED_HOSTS" default:"" desc:"comma-separated Host header patterns (path.Match, e.g. relay.example.com, *.example.com; * = any) the fanout answers; others get 403. Empty: on a loopback-only RELAY_FANOUT_ADDR only localhost names and loopback addresses (against DNS rebinding), elsewhere any"`
	AllowCIDRs          string   `envconfig:"FANOUT_ALLOW_CIDRS" default:"" desc:"comma-separated CIDRs of client addresses allowed to use the fanout (empty: all); others get 403"`
	DenyCIDRs           string   `envconfig:"FANOUT_DENY_CIDRS" default:"" desc:"comma-separated CIDRs of client addresses refused with 403 (wins over RELAY_FANOUT_ALLOW_CIDRS)"`
	TrustedProxies      string   `envconfig:"FANOUT_TRUSTED_PROXIES" default:"" desc:"comma-separated CIDRs of proxies whose X-Forwarded-For/Forwarded/X-Forwarded-Proto headers or PROXY protocol header are believed; from anyone else the socket peer is the client"`
	TLSCertFile         string   `envconfig:"FANOUT_TLS_CERT_FILE" default:"" desc:"certificate (PEM, with chain): serve https/wss on RELAY_FANOUT_ADDR; re-read when the file changes"`
	TLSKeyFile          string   `envconfig:"FANOUT_TLS_KEY_FILE" default:"" desc:"key (PEM) of RELAY_FANOUT_TLS_CERT_FILE"`
	FanoutControlRate   float64  `envconfig:"FANOUT_CONTROL_RATE" default:"100" desc:"most control messages per second one WebSocket client may send (burst: the same number, at least 1); past it the fanout reads that client more slowly (TCP pushes back), nothing is dropped. 0 = unlimited, else at least 1"`
	FanoutControlMax    int      `envconfig:"FANOUT_CONTROL_MAX_MESSAGE" default:"65536" desc:"largest control message in bytes a WebSocket client may send; a larger one closes the client with 1009 (at most 16777215 and the NATS server's max payload)"`
}

// Durable settings say which channels are stored in NATS JetStream and how
// long (docs/architecture.md, Durable channels); every role reads them.
type Durable struct {
	DurableChannels []string      `envconfig:"DURABLE_CHANNELS" default:"" desc:"comma-separated channel patterns (* matches one token, a final > the rest, as in NATS) whose messages are stored in the JetStream stream RELAY_DURABLE_STREAM; ingest publishes them with acks and tells '+ack' senders what is stored; empty = none (every channel is core NATS, at most once)"`
	DurableStream   string        `envconfig:"DURABLE_STREAM" default:"RELAY" desc:"name of the JetStream stream holding the durable channels; relay creates it, or updates its subjects and limits, at start"`
	DurableMaxAge   time.Duration `envconfig:"DURABLE_MAX_AGE" default:"24h" desc:"a durable message is kept at most this long (0 = no age limit)"`
	DurableMaxMsgs  int64         `envconfig:"DURABLE_MAX_MSGS_PER_CHANNEL" default:"10000" desc:"most messages kept per durable channel; the oldest go first (0 = no limit)"`
	DurableMaxBytes int64         `envconfig:"DURABLE_MAX_BYTES" default:"1073741824" desc:"most bytes the stream keeps over all durable channels; the oldest messages go first (0 = no limit)"`
	DurableReplicas int           `envconfig:"DURABLE_REPLICAS" default:"1" desc:"copies of the stream in the NATS cluster (1 to 5; at most the number of JetStream servers)"`
	DurableRing     int           `envconfig:"DURABLE_RING" default:"1024" desc:"fanout: recent messages kept in memory per durable channel with local watchers, so resumes (?since=, ?last=, ?since_time=) and watchers catching up within them make no JetStream request (0 = none: every resume reads the stream; at most 1048576)"`
	DataDir         string        `envconfig:"DATA_DIR" default:"relay-data" desc:"'relay all' only, with durable channels: directory of the embedded NATS server's JetStream store (created if missing; relative to the working directory), so history survives a restart"`
}

// Auth settings say who may send and watch (docs/architecture.md,
// Authentication); both tiers read them.
type Auth struct {
	AuthMode       string        `envconfig:"AUTH" default:"off" desc:"off: anyone may send to and watch every channel; jwt: a token (JWT with a relay claim) is needed, except on public patterns and public listeners"`
	HMACSecretFile string        `envconfig:"AUTH_HMAC_SECRET_FILE" default:"" desc:"file holding the HMAC secret (HS256/384/512; at least 32 bytes, a trailing newline ignored); re-read when it changes"`
	PublicKeysFile string        `envconfig:"AUTH_PUBLIC_KEYS_FILE" default:"" desc:"file of public keys (PEM bundle or JWKS; RS*, PS*, ES*, EdDSA; kid selects); re-read when it changes, for rotation"`
	Issuer         string        `envconfig:"AUTH_ISSUER" default:"" desc:"when set, a token's iss must equal it"`
	Audience       string        `envconfig:"AUTH_AUDIENCE" default:"" desc:"when set, a token's aud must include it"`
	ClockSkew      time.Duration `envconfig:"AUTH_CLOCK_SKEW" default:"30s" desc:"leeway for exp and nbf; a connection ends this long after its token's exp"`
	PublicWatch    []string      `envconfig:"AUTH_PUBLIC_WATCH" default:"" desc:"comma-separated channel patterns anyone may watch without a token (* one token, > the rest)"`
	PublicSend     []string      `envconfig:"AUTH_PUBLIC_SEND" default:"" desc:"comma-separated channel patterns anyone may send to through a handshake listener without a token"`
	Cookie         string        `envconfig:"AUTH_COOKIE" default:"relay_token" desc:"name of the cookie a WebSocket upgrade may carry its token in"`
	QueryToken     bool          `envconfig:"AUTH_QUERY_TOKEN" default:"false" desc:"also accept ?token=T on /ws/ URLs (off: URLs end up in access logs and browser history)"`
}

// Config is everything relay reads. Each role uses the parts it needs.
type Config struct {
	Common
	Ingest
	Fanout
	Durable
	Auth
}

// Load reads the RELAY_* variables from the environment (and nothing else: not
// the unprefixed names envconfig would fall back to, so a NATS_URL or
// LOG_LEVEL meant for another program is never taken). It never changes the
// environment. Every unparseable value is reported (joined, each a *VarError);
// such a variable keeps its default, so that Validate can report its own
// problems in the same run.
func Load() (Config, error) {
	var c Config
	var errs []error
	explicit := map[string]bool{}
	for _, f := range fields(&c) {
		value, set := os.LookupEnv(f.name)
		explicit[f.name] = set
		if err := f.load(value, set); err != nil {
			errs = append(errs, &VarError{Name: f.name, Value: value, Err: err})
			f.load("", false)
		}
	}
	c.derivePerIPCaps(explicit)
	return c, errors.Join(errs...)
}

// derivePerIPCaps keeps one client address from holding every connection
// slot. A per-address cap at or above the process cap lets one address lock
// every other client out for as long as its connections stay open, so when
// an operator lowers RELAY_INGEST_MAX_CONNECTIONS (or the fanout's) to or
// below the per-address default without setting the per-address cap, the
// cap becomes half the process cap. A per-address cap the operator set
// explicitly is kept (the tiers warn at start when it allows a lockout).
func (c *Config) derivePerIPCaps(explicit map[string]bool) {
	derive := func(name string, perIP *int, total int) {
		if !explicit[name] && total > 1 && *perIP >= total {
			*perIP = max(1, total/2)
		}
	}
	derive(Prefix+"_INGEST_MAX_CONNECTIONS_PER_IP", &c.Ingest.MaxConnectionsPerIP, c.Ingest.MaxConnections)
	derive(Prefix+"_FANOUT_MAX_CONNECTIONS_PER_IP", &c.Fanout.MaxConnectionsPerIP, c.Fanout.MaxConnections)
}

// VarError is a variable whose value could not be parsed.
type VarError struct {
	Name, Value string
	Err         error
}

func (e *VarError) Error() string {
	if _, ok := e.Err.(listenerErrors); ok {
		return e.Err.Error() // names the variable and each bad entry itself
	}
	return fmt.Sprintf("%s=%q: %v", e.Name, e.Value, e.Err)
}

func (e *VarError) Unwrap() error { return e.Err }

// field is one RELAY_* variable of a Config being loaded.
type field struct {
	name  string // RELAY_...
	tag   reflect.StructTag
	value reflect.Value // settable
}

// fields lists c's variables, in declaration order.
func fields(c *Config) []field {
	var out []field
	for _, group := range []reflect.Value{reflect.ValueOf(&c.Common).Elem(), reflect.ValueOf(&c.Ingest).Elem(), reflect.ValueOf(&c.Fanout).Elem(), reflect.ValueOf(&c.Durable).Elem(), reflect.ValueOf(&c.Auth).Elem()} {
		for i := range group.NumField() {
			sf := group.Type().Field(i)
			if name, ok := sf.Tag.Lookup("envconfig"); ok {
				out = append(out, field{name: Prefix + "_" + name, tag: sf.Tag, value: group.Field(i)})
			}
		}
	}
	return out
}

// load sets the field from value (from its default when not set), parsed by
// envconfig: a one-field struct is processed whose key is the variable's full
// name, or, for the default, a key no environment can hold (it contains '=').
func (f field) load(value string, set bool) error {
	key := f.name
	if !set {
		key = "=" + f.name
	}
	tag := fmt.Sprintf(`envconfig:%q default:%q`, key, f.tag.Get("default"))
	one := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: f.value.Type(), Tag: reflect.StructTag(tag)}}))
	err := envconfig.Process("", one.Interface())
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return explain(f.value.Type(), pe.Err)
	}
	if err != nil {
		return err
	}
	f.value.Set(one.Elem().Field(0))
	return nil
}

// explain says what a value of type t looks like, with an example.
func explain(t reflect.Type, err error) error {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return errors.New("not a duration: write a number with a unit, e.g. 30s, 1m30s, 500ms or 2h")
	case t.Kind() == reflect.Int:
		return errors.New("not a whole number (e.g. 65536)")
	case t.Kind() == reflect.Bool:
		return errors.New("not true or false")
	}
	return err
}

// Role names which parts of the config a subcommand uses.
type Role string

// Roles.
const (
	RoleAll    Role = "all"
	RoleIngest Role = "ingest"
	RoleFanout Role = "fanout"
)

// Validate checks the values role uses and returns every problem joined.
func (c Config) Validate(role Role) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if role != RoleAll {
		if _, err := c.NATSURLs(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NATSRetry < 0 {
		add("RELAY_NATS_RETRY_WINDOW=%s: must not be negative", c.NATSRetry)
	}
	if err := subjects.ValidatePrefix(c.SubjectPrefix); err != nil {
		add("RELAY_SUBJECT_PREFIX=%q: %v", c.SubjectPrefix, err)
	}
	if _, err := c.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		add("RELAY_LOG_FORMAT=%q: must be text or json", c.LogFormat)
	}
	if c.ShutdownGrace <= 0 {
		add("RELAY_SHUTDOWN_GRACE=%s: must be positive", c.ShutdownGrace)
	}
	if c.NATSPingInterval < 100*time.Millisecond {
		add("RELAY_NATS_PING_INTERVAL=%s: must be at least 100ms", c.NATSPingInterval)
	}
	if c.NATSMaxPings < 1 {
		add("RELAY_NATS_MAX_PINGS_OUTSTANDING=%d: must be at least 1", c.NATSMaxPings)
	}
	if role == RoleAll && c.EmbeddedListen != "" {
		if err := checkAddr(c.EmbeddedListen); err != nil {
			add("RELAY_NATS_LISTEN=%q: %v", c.EmbeddedListen, err)
		}
	}

	errs = append(errs, c.Durable.Validate(role))
	errs = append(errs, c.Control().Validate(role))
	errs = append(errs, c.Common.validateNet())
	if role == RoleAll || role == RoleIngest {
		errs = append(errs, c.Ingest.Validate())
	}
	errs = append(errs, c.Auth.Validate())
	if c.AuthMode == "jwt" && (role == RoleAll || role == RoleIngest) {
		errs = append(errs, c.openFixedListeners())
	}
	if role == RoleAll || role == RoleFanout {
		errs = append(errs, c.Fanout.Validate())
	}
	errs = append(errs, c.clashes(role)...)
	return errors.Join(errs...)
}

// NATSURLs splits and checks RELAY_NATS_URL.
func (c Config) NATSURLs() ([]string, error) {
	var out []string
	for _, u := range strings.Split(c.NATSURL, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			return nil, fmt.Errorf("RELAY_NATS_URL: %q is not a URL like nats://host:4222", u)
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("RELAY_NATS_URL: %q: scheme must be nats, tls, ws or wss", u)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("RELAY_NATS_URL: empty")
	}
	return out, nil
}

// SlogLevel parses RELAY_LOG_LEVEL.
func (c Config) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("RELAY_LOG_LEVEL=%q: must be debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Validate checks the ingest settings and returns every problem joined.
func (i Ingest) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(i.Listeners) == 0 {
		add("RELAY_INGEST_LISTENERS: no listeners")
	}
	if i.HTTPAddr != "" {
		if err := checkAddr(i.HTTPAddr); err != nil {
			add("RELAY_INGEST_HTTP_ADDR=%q: %v", i.HTTPAddr, err)
		}
	}
	if i.MaxMessage < 1 || i.MaxMessage > 64<<20 {
		add("RELAY_INGEST_MAX_MESSAGE=%d: must be between 1 and %d", i.MaxMessage, 64<<20)
	}
	if i.HandshakeTimeout <= 0 {
		add("RELAY_INGEST_HANDSHAKE_TIMEOUT=%s: must be positive", i.HandshakeTimeout)
	}
	if i.KeepAlive < 0 {
		add("RELAY_INGEST_TCP_KEEPALIVE=%s: must not be negative", i.KeepAlive)
	}
	if i.DurableInFlight < 1 {
		add("RELAY_INGEST_DURABLE_IN_FLIGHT=%d: must be at least 1", i.DurableInFlight)
	}
	if i.OutageHold <= 0 {
		add("RELAY_INGEST_OUTAGE_HOLD=%s: must be positive", i.OutageHold)
	}
	if i.MaxConnections < 1 {
		add("RELAY_INGEST_MAX_CONNECTIONS=%d: must be at least 1", i.MaxConnections)
	}
	if i.ReadBuffer < 4096 || i.ReadBuffer > 16<<20 {
		add("RELAY_INGEST_READ_BUFFER=%d: must be between 4096 and %d", i.ReadBuffer, 16<<20)
	}
	errs = append(errs, i.validateNet())
	return errors.Join(errs...)
}

// maxDurableRing bounds RELAY_DURABLE_RING: a ring's slots are allocated
// when a durable channel gets its first local watcher.
const maxDurableRing = 1 << 20

// Validate checks the durable settings and returns every problem joined.
func (d Durable) Validate(role Role) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, p := range d.DurableChannels {
		if err := auth.ValidatePattern(strings.TrimSpace(p)); err != nil {
			add("RELAY_DURABLE_CHANNELS: %v", err)
		}
	}
	if d.DurableStream == "" || strings.ContainsAny(d.DurableStream, " \t\r\n.*>/\\") || len(d.DurableStream) > 64 {
		add("RELAY_DURABLE_STREAM=%q: must be 1 to 64 characters without spaces, '.', '*', '>', '/' or '\\'", d.DurableStream)
	}
	if d.DurableMaxAge < 0 {
		add("RELAY_DURABLE_MAX_AGE=%s: must not be negative (0 = no limit)", d.DurableMaxAge)
	}
	if d.DurableMaxMsgs < 0 {
		add("RELAY_DURABLE_MAX_MSGS_PER_CHANNEL=%d: must not be negative (0 = no limit)", d.DurableMaxMsgs)
	}
	if d.DurableMaxBytes < 0 {
		add("RELAY_DURABLE_MAX_BYTES=%d: must not be negative (0 = no limit)", d.DurableMaxBytes)
	}
	if d.DurableReplicas < 1 || d.DurableReplicas > 5 {
		add("RELAY_DURABLE_REPLICAS=%d: must be between 1 and 5", d.DurableReplicas)
	}
	if d.DurableRing < 0 || d.DurableRing > maxDurableRing {
		add("RELAY_DURABLE_RING=%d: must be between 0 and %d", d.DurableRing, maxDurableRing)
	}
	if role == RoleAll && len(d.DurableChannels) > 0 && strings.TrimSpace(d.DataDir) == "" {
		add("RELAY_DATA_DIR: empty; 'relay all' with durable channels needs a directory for the JetStream store")
	}
	return errors.Join(errs...)
}

// Validate checks the fanout settings and returns every problem joined.
func (f Fanout) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkAddr(f.Addr); err != nil {
		add("RELAY_FANOUT_ADDR=%q: %v", f.Addr, err)
	}
	if f.ClientQueue < 1 {
		add("RELAY_FANOUT_CLIENT_QUEUE=%d: must be at least 1", f.ClientQueue)
	}
	if f.ClientQueueBytes < 1024 {
		add("RELAY_FANOUT_CLIENT_QUEUE_BYTES=%d: must be at least 1024", f.ClientQueueBytes)
	}
	if f.ClientQueueMaxBytes < f.ClientQueueBytes {
		add("RELAY_FANOUT_CLIENT_QUEUE_MAX_BYTES=%d: must be at least RELAY_FANOUT_CLIENT_QUEUE_BYTES (%d)", f.ClientQueueMaxBytes, f.ClientQueueBytes)
	}
	if f.SlowGrace <= 0 {
		add("RELAY_FANOUT_SLOW_GRACE=%s: must be positive", f.SlowGrace)
	}
	if f.DrainSpread < 0 {
		add("RELAY_FANOUT_DRAIN_SPREAD=%s: must not be negative", f.DrainSpread)
	}
	if f.PingInterval < 0 {
		add("RELAY_FANOUT_PING_INTERVAL=%s: must not be negative", f.PingInterval)
	}
	if f.WriteTimeout <= 0 {
		add("RELAY_FANOUT_WRITE_TIMEOUT=%s: must be positive", f.WriteTimeout)
	}
	if f.MaxConnections < 1 {
		add("RELAY_FANOUT_MAX_CONNECTIONS=%d: must be at least 1", f.MaxConnections)
	}
	if f.SubPendingMsgs < 1 {
		add("RELAY_FANOUT_SUB_PENDING_MSGS=%d: must be at least 1", f.SubPendingMsgs)
	}
	if f.SubPendingBytes < 1024 {
		add("RELAY_FANOUT_SUB_PENDING_BYTES=%d: must be at least 1024", f.SubPendingBytes)
	}
	for _, o := range f.AllowedOrigins {
		if _, err := path.Match(strings.ToLower(strings.TrimSpace(o)), ""); err != nil || strings.TrimSpace(o) == "" {
			add("RELAY_FANOUT_ALLOWED_ORIGINS: %q is not a valid pattern", o)
		}
	}
	if f.PublicIngestAddr != "" {
		if _, _, err := net.SplitHostPort(f.PublicIngestAddr); err != nil {
			add("RELAY_FANOUT_PUBLIC_INGEST_ADDR=%q: %v", f.PublicIngestAddr, err)
		}
	}
	errs = append(errs, f.validateNet())
	return errors.Join(errs...)
}

// Validate checks the auth settings and returns every problem joined.
// Whether the key files parse is checked when relay starts (shared/auth).
func (a Auth) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch a.AuthMode {
	case "off":
	case "jwt":
		if a.HMACSecretFile == "" && a.PublicKeysFile == "" {
			add("RELAY_AUTH=jwt needs a key: set RELAY_AUTH_HMAC_SECRET_FILE and/or RELAY_AUTH_PUBLIC_KEYS_FILE")
		}
	default:
		add("RELAY_AUTH=%q: must be off or jwt", a.AuthMode)
	}
	if a.ClockSkew < 0 || a.ClockSkew > 10*time.Minute {
		add("RELAY_AUTH_CLOCK_SKEW=%s: must be between 0 and 10m", a.ClockSkew)
	}
	for _, v := range []struct {
		name     string
		patterns []string
	}{{"RELAY_AUTH_PUBLIC_WATCH", a.PublicWatch}, {"RELAY_AUTH_PUBLIC_SEND", a.PublicSend}} {
		for _, p := range v.patterns {
			if err := auth.ValidatePattern(p); err != nil {
				add("%s: %v", v.name, err)
			}
		}
	}
	if a.Cookie == "" || strings.ContainsAny(a.Cookie, " \t\r\n;,=\"") {
		add("RELAY_AUTH_COOKIE=%q: must be a cookie name", a.Cookie)
	}
	return errors.Join(errs...)
}

// openFixedListeners reports every fixed listener that would let anyone
// send under RELAY_AUTH=jwt: it carries no token, so it must be marked
// public (or be restricted by the transport options) to be kept.
func (c Config) openFixedListeners() error {
	var errs []error
	for _, l := range c.Listeners {
		if err := l.CheckAuth(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
