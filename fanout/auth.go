package fanout

import (
	"errors"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/metrics"
)

// Subprotocols. A client that sends its token as a subprotocol offers
// SubprotocolV1 (or a later relay.v1 variant) and BearerPrefix+TOKEN; the
// server selects SubprotocolV1 and never echoes the token.
const (
	SubprotocolV1 = "relay.v1"
	BearerPrefix  = "relay.bearer."
)

// WebSocket close codes of the close-code table (docs/architecture.md) for auth refusals after the
// upgrade (a browser cannot read the HTTP status of a refused upgrade).
const (
	StatusUnauthorized websocket.StatusCode = 4401 // no token, invalid or expired token
	StatusForbidden    websocket.StatusCode = 4403 // token valid, channel not permitted
)

// Refusal and disconnect reasons for auth (Metrics.Refused, Disconnects).
const (
	refusedUnauthorized    = metrics.FanoutUnauthorized
	refusedForbidden       = metrics.FanoutForbidden
	disconnectTokenExpired = metrics.DisconnectTokenExpired
	reasonTokenExpired     = "token expired" // the close reason with 4401 at exp
	// DefaultAuthCookie is RELAY_AUTH_COOKIE's default.
	DefaultAuthCookie = "relay_token"
	// maxBearer bounds a token read from the Authorization header.
	maxBearer = 8 << 10
)

// requestToken finds the token of an upgrade request, in the documented order:
// Authorization: Bearer, the relay.bearer. subprotocol, the cookie, and
// ?token= only when enabled. A ?token= that is not enabled is refused
// rather than ignored, so its sender learns why instead of seeing "token
// required".
func (s *Server) requestToken(r *http.Request) (string, *auth.Refusal) {
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if tok = strings.TrimSpace(tok); tok != "" && len(tok) <= maxBearer {
				return tok, nil
			}
		}
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), BearerPrefix); ok && tok != "" {
				return tok, nil
			}
		}
	}
	if c, err := r.Cookie(s.authCookie); err == nil && c.Value != "" {
		return c.Value, nil
	}
	if r.URL.Query().Has("token") {
		if !s.queryToken {
			return "", auth.ErrQueryTokenOff
		}
		return r.URL.Query().Get("token"), nil
	}
	return "", nil
}

// authorize checks that the request may watch channel.
func (s *Server) authorize(r *http.Request, channel string) (auth.Identity, error) {
	if !s.auth.Enabled() {
		return auth.Identity{}, nil
	}
	tok, refusal := s.requestToken(r)
	if refusal != nil && !s.auth.Public(auth.ActionWatch, channel) {
		return auth.Identity{}, refusal
	}
	return s.auth.Authorize(tok, auth.ActionWatch, channel)
}

// refuseAuth completes the upgrade and closes at once with 4401 or 4403
// and the refusal's fixed text: a browser cannot read the HTTP status of a
// refused upgrade (it sees 1006 and retries blindly), but it can read a
// close code. The close handshake is bounded by closeGrace.
func (s *Server) refuseAuth(w http.ResponseWriter, r *http.Request, err error, channel, sub string) {
	var ref *auth.Refusal
	if !errors.As(err, &ref) {
		ref = auth.ErrInvalid
	}
	code, reason := StatusUnauthorized, refusedUnauthorized
	if !ref.Unauthorized() {
		code, reason = StatusForbidden, refusedForbidden
	}
	s.m.Refused.Inc(reason)
	s.m.AuthRefused.Inc(metrics.AuthReason(string(ref.Reason)))
	if n, ok := s.refusals.Allow(string(reason)); ok {
		s.log.Info("upgrade refused", "reason", reason, "code", int(code), "detail", ref.Text, "channel", channel,
			"sub", sub, "remote", clientOf(r).addr.String(), "origin", r.Header.Get("Origin"), "suppressed", n)
	}
	s.closeUpgraded(w, r, code, ref.Text)
}
