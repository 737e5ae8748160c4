package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// health is a probe for images without a shell: GET URL, exit 0 on 2xx.
func health(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: relay health URL   (e.g. http://127.0.0.1:8080/readyz)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		fmt.Fprintf(stderr, "relay health: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "relay health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "relay health: %s answered %s\n", args[0], resp.Status)
		return 1
	}
	return 0
}
