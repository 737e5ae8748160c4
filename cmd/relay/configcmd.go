package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
)

// configCmd validates the configuration for a role (default all) and prints
// every variable with its value, default and meaning.
func configCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	markdown := fs.Bool("markdown", false, "print the README's configuration table instead")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *markdown {
		config.Markdown(stdout)
		return 0
	}
	role := config.RoleAll
	if fs.NArg() > 0 {
		role = config.Role(fs.Arg(0))
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
