package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
)

const configUsage = `usage: relay config [--markdown] [ROLE]

Validates the RELAY_* environment for ROLE (all, ingest or fanout; default
all) and prints every variable with its value, default and meaning.
Exit status: 0 valid, 2 invalid (every problem is listed) or bad usage.
`

// configCmd validates the configuration for a role (default all) and prints
// every variable with its value, default and meaning.
func configCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config")
	markdown := fs.Bool("markdown", false, "print the README's configuration table instead")
	pos, code, ok := parseFlags(fs, configUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "config", "[ROLE]", pos, 0, 1); !ok {
		return code
	}
	if *markdown {
		config.Markdown(stdout)
		return 0
	}
	role := config.RoleAll
	if len(pos) > 0 {
		role = config.Role(pos[0])
		if role != config.RoleAll && role != config.RoleIngest && role != config.RoleFanout {
			fmt.Fprintf(stderr, "relay config: role must be all, ingest or fanout, not %q\n", role)
			return 2
		}
	}
	cfg, err := loadConfig(role)
	cfg.PrintUsage(stdout)
	if err != nil {
		fmt.Fprintf(stderr, "\n%v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "\nconfiguration valid for 'relay %s'\n", role)
	return 0
}

// loadConfig reads and validates the environment for role, returning
// every problem in one error.
func loadConfig(role config.Role) (config.Config, error) {
	cfg, loadErr := config.Load()
	err := errors.Join(loadErr, cfg.Validate(role))
	if err == nil && cfg.AuthMode == string(auth.ModeJWT) {
		// The key files are configuration too: a missing or bad one is
		// reported here, with everything else, rather than at start.
		_, err = auth.New(authOptions(cfg, slog.New(slog.DiscardHandler)))
	}
	if err == nil {
		return cfg, nil
	}
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, line := range strings.Split(err.Error(), "\n") {
		b.WriteString("\n  - " + line)
	}
	return cfg, errors.New(b.String())
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	level, _ := cfg.SlogLevel()
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
