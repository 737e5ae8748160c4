package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

const healthUsage = `usage: relay health [--timeout D] URL

A probe for images without a shell: GET URL and exit 0 when it answers 2xx,
e.g. relay health http://127.0.0.1:8080/readyz.
Exit status: 0 on 2xx, 1 on any other answer or no answer, 2 on bad usage.
`

// health is a probe for images without a shell: GET URL, exit 0 on 2xx.
func health(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("health")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	pos, code, ok := parseFlags(fs, healthUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "health", "URL", pos, 1, 1); !ok {
		return code
	}
	if *timeout <= 0 {
		return usageError(stderr, "health", "--timeout must be more than 0, got %s", *timeout)
	}
	url := pos[0]
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError(stderr, "health", "%v", err)
	}
	// A probe keeps no connection open between runs.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "relay health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "relay health: %s answered %s\n", url, resp.Status)
		return 1
	}
	return 0
}
