package main

import (
	"log/slog"
	"net"
	"strings"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
)

// authOptions maps the RELAY_AUTH_* settings to shared/auth's options.
func authOptions(cfg config.Config, log *slog.Logger) auth.Options {
	return auth.Options{
		Mode:           auth.Mode(cfg.AuthMode),
		HMACSecretFile: cfg.HMACSecretFile,
		PublicKeysFile: cfg.PublicKeysFile,
		Issuer:         cfg.Issuer,
		Audience:       cfg.Audience,
		ClockSkew:      cfg.ClockSkew,
		PublicWatch:    cfg.PublicWatch,
		PublicSend:     cfg.PublicSend,
		Logger:         log.With("component", "auth"),
	}
}

// newAuthenticator loads the keys (a start fails here, naming the file,
// when one cannot be read) and logs the mode once.
func newAuthenticator(cfg config.Config, log *slog.Logger) (*auth.Authenticator, error) {
	a, err := auth.New(authOptions(cfg, log))
	if err != nil {
		return nil, err
	}
	if a.Enabled() {
		log.Info("auth on: tokens required", "auth", a.Describe())
	}
	return a, nil
}

// warnOpen logs one WARN at start when auth is off and anything listens
// beyond loopback: it names what anyone who reaches it may do.
func warnOpen(role config.Role, cfg config.Config, log *slog.Logger) {
	if cfg.AuthMode != string(auth.ModeOff) {
		return
	}
	var open []string
	if role == config.RoleAll || role == config.RoleIngest {
		for _, l := range cfg.Listeners {
			if !loopback(l.Addr) {
				open = append(open, "send "+l.String())
			}
		}
	}
	if (role == config.RoleAll || role == config.RoleFanout) && !loopback(cfg.Fanout.Addr) {
		open = append(open, "watch every channel on "+cfg.Fanout.Addr)
	}
	if len(open) > 0 {
		log.Warn("RELAY_AUTH=off: anyone who reaches these listeners may send to or watch any channel; set RELAY_AUTH=jwt (see README, Authentication)",
			"open", strings.Join(open, "; "))
	}
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
