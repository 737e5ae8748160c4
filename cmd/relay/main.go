// Command relay carries bytes from raw TCP senders to WebSocket receivers.
// One binary, roles as subcommands; see README.md and `relay help`.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `relay — raw TCP senders in, WebSocket receivers out.

Usage:
  relay all                   embedded NATS + ingest + fanout in one process
  relay ingest                ingest tier only (needs RELAY_NATS_URL)
  relay fanout                fanout tier only (needs RELAY_NATS_URL)
  relay send ADDR [CHANNEL]   send stdin to an ingest listener (handshake when CHANNEL is given)
  relay watch URL             print each WebSocket message from URL on its own line
  relay token [flags]         mint a token (JWT) for RELAY_AUTH=jwt (--send/--watch/--control P, --sub, --ttl, --key)
  relay bench [flags]         load generator: senders + receivers, throughput/latency/CPU report
  relay config [ROLE]         validate the configuration and print every variable
  relay health URL            exit 0 when URL answers 2xx (container health probe)
  relay version               print version, commit and Go version
  relay help [COMMAND]        this text, or COMMAND's usage (same as 'relay COMMAND -h')

Configuration is read from RELAY_* environment variables: run 'relay config'.
Exit status: 0 done, 1 failed at run time, 2 bad usage or configuration
(send and watch add their own: see 'relay send -h', 'relay watch -h').
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// commands maps each subcommand to its function; each returns the exit
// status and answers -h/--help with its usage on stdout.
var commands = map[string]func(args []string, stdin io.Reader, stdout, stderr io.Writer) int{
	"all":     serveCmd("all"),
	"ingest":  serveCmd("ingest"),
	"fanout":  serveCmd("fanout"),
	"send":    func(a []string, in io.Reader, out, errw io.Writer) int { return send(a, in, out, errw) },
	"watch":   func(a []string, in io.Reader, out, errw io.Writer) int { return watch(a, in, out, errw) },
	"bench":   func(a []string, _ io.Reader, out, errw io.Writer) int { return bench(a, out, errw) },
	"token":   func(a []string, _ io.Reader, out, errw io.Writer) int { return token(a, out, errw) },
	"config":  func(a []string, _ io.Reader, out, errw io.Writer) int { return configCmd(a, out, errw) },
	"health":  func(a []string, _ io.Reader, out, errw io.Writer) int { return health(a, out, errw) },
	"version": func(a []string, _ io.Reader, out, errw io.Writer) int { return versionCmd(a, out, errw) },
}

// run dispatches a subcommand and returns the process exit status:
// 0 success, 1 failure at run time, 2 bad usage or configuration.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "--version", "-version":
		cmd = "version"
	case "help", "-h", "--help", "-help":
		if cmd == "help" && len(rest) > 0 && rest[0] != "-h" && rest[0] != "--help" && rest[0] != "-help" {
			if len(rest) > 1 {
				return usageError(stderr, "help", "want at most one COMMAND; extra argument %q", rest[1])
			}
			if _, ok := commands[rest[0]]; !ok {
				return usageError(stderr, "help", "unknown command %q (commands: all, ingest, fanout, send, watch, token, bench, config, health, version)", rest[0])
			}
			return run([]string{rest[0], "-h"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "relay: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	return f(rest, stdin, stdout, stderr)
}

const versionUsage = `usage: relay version

Prints relay's version, commit, Go version and platform.
`

func versionCmd(args []string, stdout, stderr io.Writer) int {
	pos, code, ok := parseFlags(newFlags("version"), versionUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "version", "no arguments", pos, 0, 0); !ok {
		return code
	}
	printVersion(stdout)
	return 0
}

// serveUsage is the help of 'relay all|ingest|fanout'; the role's
// variables follow it, as 'relay config ROLE' lists them.
var serveUsage = map[string]string{
	"all": `usage: relay all

Runs everything in one process: an embedded NATS server (in-process unless
RELAY_NATS_LISTEN is set), the ingest tier (TCP listeners) and the fanout tier
(WebSocket, demo page). The default for a laptop, a demo and tests.
`,
	"ingest": `usage: relay ingest

Runs the ingest tier only: TCP listeners that frame what senders write and
publish each message to NATS (RELAY_NATS_URL).
`,
	"fanout": `usage: relay fanout

Runs the fanout tier only: WebSocket receivers at /ws/{channel}, the demo page
at /, fed from NATS (RELAY_NATS_URL).
`,
}

const serveTail = `
Takes no arguments: it is configured with RELAY_* environment variables.
Stops on SIGINT/SIGTERM after draining. Exit status: 0 after a clean shutdown,
1 when it could not start or failed (port in use, NATS unreachable past the
retry window), 2 on bad configuration.

The variables 'relay %[1]s' reads ('relay config %[1]s'):

`

// serveCmd is 'relay all|ingest|fanout': help and arguments here, the
// rest in serve.
func serveCmd(role string) func([]string, io.Reader, io.Writer, io.Writer) int {
	return func(args []string, _ io.Reader, stdout, stderr io.Writer) int {
		fs := newFlags(role)
		pos, code, ok := parseFlags(fs, serveUsage[role], args, stdout, stderr)
		if !ok {
			if code == 0 { // -h: the role's variables too
				fmt.Fprintf(stdout, serveTail, role)
				configCmd([]string{role}, stdout, stderr)
			}
			return code
		}
		if len(pos) > 0 {
			return usageError(stderr, role, "takes no arguments, got %q (configure with RELAY_* variables; see 'relay config %s')", pos[0], role)
		}
		return serve(role, nil, stderr)
	}
}
