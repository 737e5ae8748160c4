package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// send copies stdin to an ingest listener. With CHANNEL it first performs
// the handshake and waits for +OK. Any -ERR the server sends is printed and
// makes the exit status 1, so scripts notice refused data.
func send(args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	token := fs.String("token", "", "token to send after CHANNEL in the handshake")
	timeout := fs.Duration("timeout", 10*time.Second, "connect and handshake timeout")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay send [-token T] ADDR [CHANNEL] < data\n  ADDR is an ingest listener, e.g. 127.0.0.1:7070 (fixed channel) or 127.0.0.1:7071 with CHANNEL (handshake)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return 2
	}
	addr := fs.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := net.Dialer{Timeout: *timeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "relay send: %v\n", err)
		return 1
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	replies := bufio.NewReader(tcp)

	if fs.NArg() == 2 {
		line := fs.Arg(1)
		if *token != "" {
			line += " " + *token
		}
		tcp.SetDeadline(time.Now().Add(*timeout))
		if _, err := io.WriteString(tcp, line+"\n"); err != nil {
			fmt.Fprintf(stderr, "relay send: handshake: %v\n", err)
			return 1
		}
		reply, err := replies.ReadString('\n')
		if err != nil {
			fmt.Fprintf(stderr, "relay send: handshake: no reply: %v\n", err)
			return 1
		}
		if reply != "+OK\n" {
			fmt.Fprintf(stderr, "relay send: %s\n", strings.TrimSpace(reply))
			return 1
		}
		tcp.SetDeadline(time.Time{})
	}

	// The server only ever speaks to refuse: watch for -ERR while sending.
	serverErr := make(chan string, 1)
	go func() {
		line, err := replies.ReadString('\n')
		if err == nil || line != "" {
			serverErr <- strings.TrimSpace(line)
		}
		close(serverErr)
	}()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(tcp, stdin)
		copied <- err
	}()

	select {
	case err := <-copied:
		if err != nil {
			fmt.Fprintf(stderr, "relay send: %v\n", err)
			return 1
		}
		// Half-close: the server reads to EOF, publishes, and closes. Wait
		// for that (bounded) to learn of a late -ERR.
		tcp.CloseWrite()
		tcp.SetReadDeadline(time.Now().Add(*timeout))
		if msg, ok := <-serverErr; ok && msg != "" {
			fmt.Fprintf(stderr, "relay send: server: %s\n", msg)
			return 1
		}
		return 0
	case msg, ok := <-serverErr:
		if ok && msg != "" {
			fmt.Fprintf(stderr, "relay send: server: %s\n", msg)
		} else {
			fmt.Fprintln(stderr, "relay send: server closed the connection")
		}
		return 1
	case <-ctx.Done():
		return 130
	}
}
