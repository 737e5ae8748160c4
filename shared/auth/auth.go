// Package auth is relay's identity and permission check, shared by both
// edges: it verifies JWTs (github.com/golang-jwt/jwt/v5) with keys loaded
// from files that are re-read when they change, turns the `relay` claim into
// per-channel permissions, and decides whether a holder may send to, watch
// or control a channel. It knows nothing of NATS, TCP or WebSockets; each
// tier carries the token its own way and turns a Refusal into its own reply.
//
// Nothing here ever puts a token into an error, a log line or a label: the
// reasons are fixed strings, so a refusal can be shown to the peer as is.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Mode is RELAY_AUTH.
type Mode string

// Modes.
const (
	ModeOff Mode = "off" // anyone may send and watch every channel
	ModeJWT Mode = "jwt" // a token is needed, except on public patterns
)

// Action is what a holder wants to do with a channel; each is a key of the
// `relay` claim.
type Action string

// Actions.
const (
	ActionSend    Action = "send"    // publish to the channel (TCP sender)
	ActionWatch   Action = "watch"   // receive the channel (WebSocket)
	ActionControl Action = "control" // write back to the channel's senders
)

// Reason is why a peer was refused: the values of
// relay_auth_refused_total{reason}.
type Reason string

// Reasons.
const (
	ReasonMissing   Reason = "missing"   // no token where one is needed
	ReasonInvalid   Reason = "invalid"   // malformed, bad signature, wrong alg/key/iss/aud, not yet valid
	ReasonExpired   Reason = "expired"   // past exp (plus the clock skew)
	ReasonForbidden Reason = "forbidden" // valid token, channel not permitted
)

// Refusal is the error Authorize and Verify return. Its text is fixed by
// this package (never a token, never a parser's message), so a tier may send
// it to the peer, log it and use Reason as a metric label.
type Refusal struct {
	Reason Reason
	// Text is the whole reply without a tier's framing, e.g.
	// "unauthorized: token expired" or "forbidden: no watch permission for
	// this channel". At most 60 bytes, so it fits a WebSocket close reason.
	Text string
}

func (r *Refusal) Error() string { return r.Text }

// Unauthorized reports whether the refusal is about the token itself
// (4401, -ERR unauthorized) rather than the channel (4403, -ERR forbidden).
func (r *Refusal) Unauthorized() bool { return r.Reason != ReasonForbidden }

func unauthorized(reason Reason, text string) *Refusal {
	return &Refusal{Reason: reason, Text: "unauthorized: " + text}
}

// Refusals with fixed texts. Tests compare against these.
var (
	ErrMissing         = unauthorized(ReasonMissing, "token required")
	ErrMalformed       = unauthorized(ReasonInvalid, "malformed token")
	ErrBadSignature    = unauthorized(ReasonInvalid, "token signature invalid")
	ErrAlgNotAllowed   = unauthorized(ReasonInvalid, "token algorithm not allowed")
	ErrUnknownKey      = unauthorized(ReasonInvalid, "token signed by an unknown key")
	ErrExpired         = unauthorized(ReasonExpired, "token expired")
	ErrNotYetValid     = unauthorized(ReasonInvalid, "token not valid yet")
	ErrNoExpiry        = unauthorized(ReasonInvalid, "token has no exp")
	ErrWrongIssuer     = unauthorized(ReasonInvalid, "token issuer not accepted")
	ErrWrongAudience   = unauthorized(ReasonInvalid, "token audience not accepted")
	ErrBadRelayClaim   = unauthorized(ReasonInvalid, "token relay claim invalid")
	ErrInvalid         = unauthorized(ReasonInvalid, "invalid token")
	ErrQueryTokenOff   = unauthorized(ReasonInvalid, "?token= is disabled; send the token as a header or subprotocol")
	errForbiddenFormat = "forbidden: no %s permission for this channel"
)

// Forbidden returns the refusal for a valid token that does not permit act.
func Forbidden(act Action) *Refusal {
	return &Refusal{Reason: ReasonForbidden, Text: fmt.Sprintf(errForbiddenFormat, act)}
}

// Permissions are the channel patterns of a token's `relay` claim.
type Permissions struct {
	Send    []string `json:"send,omitempty"`
	Watch   []string `json:"watch,omitempty"`
	Control []string `json:"control,omitempty"`
}

// Allows reports whether the permissions let act happen on channel.
func (p Permissions) Allows(act Action, channel string) bool {
	switch act {
	case ActionSend:
		return MatchAny(p.Send, channel)
	case ActionWatch:
		return MatchAny(p.Watch, channel)
	case ActionControl:
		return MatchAny(p.Control, channel)
	}
	return false
}

func (p Permissions) validate() error {
	return errors.Join(ValidatePatterns(p.Send), ValidatePatterns(p.Watch), ValidatePatterns(p.Control))
}

// Claims are what relay reads from a token: the registered claims and
// `relay`.
type Claims struct {
	jwt.RegisteredClaims
	Relay *Permissions `json:"relay,omitempty"`
}

// Identity is who a connection belongs to.
type Identity struct {
	// Sub is the token's `sub` (empty for a public channel without a
	// token, or a token without sub). Logs name it; it is not secret.
	Sub string
	// Expires is when the connection must end (the token's exp plus the
	// clock skew); zero when nothing expires (auth off, public channel).
	Expires time.Time
	// Public is set when a public pattern let the connection in.
	Public      bool
	Permissions Permissions
}

// Options configure New; they mirror the RELAY_AUTH_* variables.
type Options struct {
	Mode           Mode
	HMACSecretFile string
	PublicKeysFile string
	Issuer         string
	Audience       string
	ClockSkew      time.Duration
	PublicWatch    []string
	PublicSend     []string
	Logger         *slog.Logger
	// ReloadInterval is how often, at most, the key files are checked for
	// changes (on use). Defaults to one second.
	ReloadInterval time.Duration
}

// Authenticator decides who may do what. It is safe for concurrent use.
type Authenticator struct {
	mode        Mode
	skew        time.Duration
	issuer      string
	publicWatch []string
	publicSend  []string
	parser      *jwt.Parser
	keys        *keyring
	log         *slog.Logger
}

// New loads the keys and returns an Authenticator. With ModeOff nothing is
// loaded and every request is allowed.
func New(o Options) (*Authenticator, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Mode == "" {
		o.Mode = ModeOff
	}
	a := &Authenticator{mode: o.Mode, skew: o.ClockSkew, issuer: o.Issuer, log: o.Logger,
		publicWatch: o.PublicWatch, publicSend: o.PublicSend}
	switch o.Mode {
	case ModeOff:
		return a, nil
	case ModeJWT:
	default:
		return nil, fmt.Errorf("auth: mode %q: must be off or jwt", o.Mode)
	}
	if err := errors.Join(ValidatePatterns(o.PublicWatch), ValidatePatterns(o.PublicSend)); err != nil {
		return nil, fmt.Errorf("auth: public patterns: %w", err)
	}
	if o.ClockSkew < 0 {
		return nil, errors.New("auth: clock skew must not be negative")
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = time.Second
	}
	kr, err := newKeyring(o.HMACSecretFile, o.PublicKeysFile, o.ReloadInterval, o.Logger)
	if err != nil {
		return nil, err
	}
	a.keys = kr
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(allAlgs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(o.ClockSkew),
	}
	if o.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		popts = append(popts, jwt.WithAudience(o.Audience))
	}
	a.parser = jwt.NewParser(popts...)
	return a, nil
}

// Enabled reports whether tokens are checked (RELAY_AUTH=jwt).
func (a *Authenticator) Enabled() bool { return a != nil && a.mode == ModeJWT }

// Public reports whether anyone may act on channel without a token.
func (a *Authenticator) Public(act Action, channel string) bool {
	switch act {
	case ActionWatch:
		return MatchAny(a.publicWatch, channel)
	case ActionSend:
		return MatchAny(a.publicSend, channel)
	}
	return false
}

// Authorize decides whether the holder of token (empty: none) may act on
// channel, which must already be a valid channel name or (for a wildcard
// watch) pattern, which a permission must cover. The error is always a
// *Refusal. With auth off, and on a public pattern, it allows everyone and
// does not look at the token.
func (a *Authenticator) Authorize(token string, act Action, channel string) (Identity, error) {
	if !a.Enabled() {
		return Identity{}, nil
	}
	if a.Public(act, channel) {
		return Identity{Public: true}, nil
	}
	if token == "" {
		return Identity{}, ErrMissing
	}
	id, err := a.Verify(token)
	if err != nil {
		return Identity{}, err
	}
	if !id.Permissions.Allows(act, channel) {
		return id, Forbidden(act)
	}
	return id, nil
}

// Verify checks a token's signature and claims and returns its identity.
// The error is always a *Refusal.
func (a *Authenticator) Verify(token string) (Identity, error) {
	if !a.Enabled() {
		return Identity{}, nil
	}
	if token == "" {
		return Identity{}, ErrMissing
	}
	var c Claims
	t, err := a.parser.ParseWithClaims(token, &c, a.keys.keyFunc)
	if err != nil {
		return Identity{}, refusalFor(t, &c, a.issuer != "", err)
	}
	id := Identity{Sub: c.Subject, Expires: c.ExpiresAt.Add(a.skew)}
	if c.Relay != nil {
		if err := c.Relay.validate(); err != nil {
			return Identity{}, ErrBadRelayClaim
		}
		id.Permissions = *c.Relay
	}
	return id, nil
}

// refusalFor maps a jwt error to one of the fixed refusals: the library's
// messages are never shown, so nothing of the token can leak through them.
func refusalFor(t *jwt.Token, c *Claims, requireIss bool, err error) *Refusal {
	var r *Refusal
	switch {
	case errors.As(err, &r):
		return r
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ErrMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// WithValidMethods reports a refused alg (incl. none) this way.
		if t != nil && t.Method != nil && !isAllowedAlg(t.Method.Alg()) {
			return ErrAlgNotAllowed
		}
		return ErrBadSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// An alg the library does not know (e.g. "none" without the
		// unsafe key, or a made-up one).
		return ErrAlgNotAllowed
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp, or iss/aud when they are checked: say which.
		switch {
		case c.ExpiresAt == nil:
			return ErrNoExpiry
		case c.Issuer == "" && requireIss:
			return ErrWrongIssuer
		}
		return ErrWrongAudience
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrWrongIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrWrongAudience
	}
	return ErrInvalid
}

// allAlgs are the algorithms relay accepts at all; each is further pinned
// to the type of the key that verifies it (keyring.keyFunc).
var allAlgs = []string{
	"HS256", "HS384", "HS512",
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

func isAllowedAlg(alg string) bool {
	for _, a := range allAlgs {
		if a == alg {
			return true
		}
	}
	return false
}

// Describe is a one-line summary of the setup for the start-up log.
func (a *Authenticator) Describe() string {
	if !a.Enabled() {
		return "off"
	}
	var parts []string
	parts = append(parts, "jwt")
	if len(a.publicWatch) > 0 {
		parts = append(parts, "public watch "+strings.Join(a.publicWatch, ","))
	}
	if len(a.publicSend) > 0 {
		parts = append(parts, "public send "+strings.Join(a.publicSend, ","))
	}
	return strings.Join(parts, "; ")
}
