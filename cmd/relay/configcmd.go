package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/relaydev/relay/shared/config"
	"github.com/relaydev/relay/shared/metrics"
)

const configUsage = `usage: relay config [--markdown | --metrics-markdown] [ROLE]

Validates the configuration 'relay ROLE' would start with (ROLE: all, ingest or fanout; default all)
and lists the RELAY_* variables that role reads: each with its value now (and its default when
different) and its meaning, wrapped for a 100-column terminal; warns about RELAY_* variables relay
does not read. --markdown prints README.md's configuration table instead (every variable, every role),
--metrics-markdown its metrics table (every relay_ metric, from the Prometheus registry).
Exit status: 0 valid, 2 invalid (every problem is listed) or bad usage.
`

// configCmd validates the configuration for a role (default all) and prints
// the variables that role reads, with their values, defaults and meanings.
func configCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("config")
	markdown := fs.Bool("markdown", false, "print the README's configuration table instead")
	metricsMarkdown := fs.Bool("metrics-markdown", false, "print the README's metrics table instead")
	pos, code, ok := parseFlags(fs, configUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	maxArgs, synopsis := 1, "[ROLE]"
	if *markdown || *metricsMarkdown {
		maxArgs, synopsis = 0, "no ROLE with --markdown or --metrics-markdown"
	}
	if code, ok := checkArgs(stderr, "config", synopsis, pos, 0, maxArgs); !ok {
		return code
	}
	switch {
	case *markdown && *metricsMarkdown:
		return usageError(stderr, "config", "give --markdown or --metrics-markdown, not both")
	case *markdown:
		config.Markdown(stdout)
		return 0
	case *metricsMarkdown:
		metrics.Markdown(stdout)
		return 0
	}
	role := config.RoleAll
	if len(pos) > 0 {
		role = config.Role(pos[0])
		if role != config.RoleAll && role != config.RoleIngest && role != config.RoleFanout {
			return usageError(stderr, "config", "ROLE must be all, ingest or fanout, not %q", role)
		}
	}
	cfg, err := loadConfig(role)
	for _, w := range unknownVariables() {
		fmt.Fprintf(stderr, "relay config: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "Variables 'relay %s' reads (value now, default when different, meaning):\n\n", role)
	config.WriteVars(stdout, cfg.RoleVars(role), config.TerminalWidth, true)
	if err != nil {
		fmt.Fprintf(stderr, "\n%v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "\nconfiguration valid for 'relay %s'\n", role)
	return 0
}

// printRoleVariables writes the variables 'relay ROLE' reads, each with its
// default and meaning, wrapped for a 100-column terminal: the variable list
// of 'relay ROLE --help'.
func printRoleVariables(w io.Writer, role config.Role) {
	fmt.Fprintf(w, "Variables 'relay %s' reads (default, meaning; 'relay config %s' shows the values now):\n\n", role, role)
	config.WriteVars(w, (config.Config{}).RoleVars(role), config.TerminalWidth, false)
}

// loadConfig reads and validates the environment for role, returning
// every problem in one error. A variable role does not read may hold
// anything.
func loadConfig(role config.Role) (config.Config, error) {
	cfg, loadErr := config.Load()
	err := errors.Join(forRole(loadErr, cfg, role), cfg.Validate(role))
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

// forRole keeps the load errors of the variables role reads.
func forRole(loadErr error, cfg config.Config, role config.Role) error {
	joined, ok := loadErr.(interface{ Unwrap() []error })
	if !ok {
		return loadErr
	}
	var keep []error
	for _, err := range joined.Unwrap() {
		var ve *config.VarError
		if errors.As(err, &ve) && !slices.ContainsFunc(cfg.RoleVars(role), func(v config.Var) bool { return v.Name == ve.Name }) {
			continue
		}
		keep = append(keep, err)
	}
	return errors.Join(keep...)
}

// unknownVariables warns about RELAY_* variables relay does not read (a
// typo would otherwise start relay on the defaults without a word).
func unknownVariables() []string { return config.Unknown(os.Environ()) }

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	level, _ := cfg.SlogLevel()
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
