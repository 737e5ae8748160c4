// Package fanout is relay's receiving tier: an HTTP server that upgrades
// GET /ws/{channel} to a WebSocket and delivers every message published on
// the channel's NATS subject to it.
//
// A Server subscribes to a channel's subject while it has at least one local
// client for it (the subscription is flushed to NATS before the 101 response,
// so a receiver misses nothing published after its upgrade). Each message is
// encoded once and shared by all local clients of the channel; every client
// has a bounded queue and its own writer goroutine, and a client that cannot
// keep up is closed with 1008 "slow consumer" rather than slowing the others
// or silently missing data. See README.md for the data flow and close codes.
//
// The package never reads the environment: cmd/relay builds Options from
// shared/config and owns process signals.
package fanout
