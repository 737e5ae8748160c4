package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// The subcommands follow the conventions of go, nats and websocat:
//   - -h, -help and --help print the command's usage on stdout, exit 0;
//   - flags may come before or after positional arguments; `--` ends flags;
//   - a usage error (unknown flag, bad value, wrong arguments) prints one line
//     naming the flag or argument on stderr and exits 2.
//
// Flags take one or two dashes (Go's flag package): --rate 10 = -rate 10.

// newFlags returns a flag set that prints nothing itself: parseFlags reports.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a subcommand's args, letting flags follow positional
// arguments. It returns the positional arguments, or ok=false and the exit
// status when the command should stop: 0 after -h, 2 after a usage error.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, usage, stdout)
			return nil, 0, false
		}
		if err != nil {
			return nil, usageError(stderr, fs.Name(), "%v", err), false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// printUsage writes a command's usage text and its flags.
func printUsage(fs *flag.FlagSet, usage string, w io.Writer) {
	fmt.Fprint(w, usage)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nFlags (one or two dashes; before or after the arguments):")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// usageError reports a usage error for `relay name` and returns exit status 2.
func usageError(stderr io.Writer, name, format string, a ...any) int {
	fmt.Fprintf(stderr, "relay %s: %s\nRun 'relay %s -h' for usage.\n", name, fmt.Sprintf(format, a...), name)
	return 2
}

// checkArgs refuses fewer than min or more than max positional arguments,
// naming what was expected and what was extra.
func checkArgs(stderr io.Writer, name, synopsis string, pos []string, min, max int) (int, bool) {
	switch {
	case len(pos) < min:
		return usageError(stderr, name, "want %s", synopsis), false
	case len(pos) > max:
		return usageError(stderr, name, "want %s; extra argument %q", synopsis, pos[max]), false
	}
	return 0, true
}

// choice is a flag that takes one of a fixed set of words; a bad value is
// refused naming the allowed ones.
type choice struct {
	value   string
	allowed []string
}

func newChoice(fs *flag.FlagSet, name, value, usage string, allowed ...string) *string {
	c := &choice{value: value, allowed: allowed}
	fs.Var(c, name, usage+": `"+strings.Join(allowed, "|")+"`")
	return &c.value
}

func (c *choice) String() string { return c.value }

func (c *choice) Set(s string) error {
	if !slices.Contains(c.allowed, s) {
		return fmt.Errorf("want one of %s", strings.Join(c.allowed, ", "))
	}
	c.value = s
	return nil
}

// tokenFlags are the --token and --token-file flags of send and watch; the
// token may also come from RELAY_TOKEN. It is never printed.
type tokenFlags struct {
	token, file *string
}

func addTokenFlags(fs *flag.FlagSet, what string) tokenFlags {
	return tokenFlags{
		token: fs.String("token", "", what+" (default $RELAY_TOKEN); prefer --token-file or RELAY_TOKEN: arguments show in ps"),
		file:  fs.String("token-file", "", "read the token from this file (surrounding white space ignored)"),
	}
}

// get returns the token from --token, --token-file or RELAY_TOKEN, in that
// order, or "" for none.
func (t tokenFlags) get() (string, error) {
	if *t.token != "" && *t.file != "" {
		return "", errors.New("give --token or --token-file, not both")
	}
	if *t.file != "" {
		b, err := os.ReadFile(*t.file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file: %s is empty", *t.file)
		}
		return tok, nil
	}
	if *t.token != "" {
		return *t.token, nil
	}
	return strings.TrimSpace(os.Getenv("RELAY_TOKEN")), nil
}

// redact replaces every occurrence of secret in s, so that an error that
// quotes what was sent (a URL, a server's reply) cannot print a token.
func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[token]")
}
