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
  relay token [flags]         mint a token (JWT) for RELAY_AUTH=jwt: --send/--watch/--control P --sub NAME --ttl 1h [--key FILE]
  relay bench [flags]         load generator: senders + receivers, throughput/latency/CPU report
  relay config [ROLE]         validate the configuration and print every variable
  relay health URL            exit 0 when URL answers 2xx (container health probe)
  relay version               print version, commit and Go version

Configuration is read from RELAY_* environment variables: run 'relay config'.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
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
	case "all", "ingest", "fanout":
		return serve(cmd, rest, stderr)
	case "send":
		return send(rest, stdin, stderr)
	case "watch":
		return watch(rest, stdout, stderr)
	case "token":
		return token(rest, stdout, stderr)
	case "bench":
		return bench(rest, stdout, stderr)
	case "config":
		return configCmd(rest, stdout, stderr)
	case "health":
		return health(rest, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "relay: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
