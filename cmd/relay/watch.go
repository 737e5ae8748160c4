package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// watch prints every message of a WebSocket URL on its own line. Binary
// messages are printed as they are, or hex/base64 encoded with -binary.
func watch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("n", 0, "exit 0 after this many messages (0: run until closed)")
	binary := fs.String("binary", "raw", "how to print binary messages: raw, hex or base64")
	timeout := fs.Duration("timeout", 10*time.Second, "connect timeout")
	origin := fs.String("origin", "", "Origin header to send (for servers that check it)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay watch [-n N] [-binary raw|hex|base64] URL\n  URL like ws://127.0.0.1:8080/ws/default")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || (*binary != "raw" && *binary != "hex" && *binary != "base64") {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dialCtx, cancel := context.WithTimeout(ctx, *timeout)
	opts := &websocket.DialOptions{}
	if *origin != "" {
		opts.HTTPHeader = map[string][]string{"Origin": {*origin}}
	}
	conn, resp, err := websocket.Dial(dialCtx, fs.Arg(0), opts)
	cancel()
	if err != nil {
		if resp != nil {
			fmt.Fprintf(stderr, "relay watch: %s: %v\n", resp.Status, err)
		} else {
			fmt.Fprintf(stderr, "relay watch: %v\n", err)
		}
		return 1
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)

	out := bufio.NewWriterSize(stdout, 64<<10)
	defer out.Flush()
	for n := 0; *count == 0 || n < *count; n++ {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			out.Flush()
			if ctx.Err() != nil {
				conn.Close(websocket.StatusNormalClosure, "")
				return 0
			}
			status := websocket.CloseStatus(err)
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				fmt.Fprintf(stderr, "relay watch: closed by server: %d %s\n", int(ce.Code), ce.Reason)
			} else {
				fmt.Fprintf(stderr, "relay watch: %v\n", err)
			}
			if status == websocket.StatusNormalClosure || status == websocket.StatusGoingAway {
				return 0
			}
			return 1
		}
		if typ == websocket.MessageBinary {
			switch *binary {
			case "hex":
				data = []byte(hex.EncodeToString(data))
			case "base64":
				data = []byte(base64.StdEncoding.EncodeToString(data))
			}
		}
		out.Write(data)
		out.WriteByte('\n')
		if err := out.Flush(); err != nil {
			return 1 // stdout closed (e.g. | head)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	return 0
}
