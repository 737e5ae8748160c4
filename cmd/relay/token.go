package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/config"
)

// patternList is a repeatable flag of channel patterns; each value may also
// be comma-separated.
type patternList []string

func (p *patternList) String() string { return strings.Join(*p, ",") }

func (p *patternList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if err := auth.ValidatePattern(s); err != nil {
				return err
			}
			*p = append(*p, s)
		}
	}
	return nil
}

// token mints a JWT for scripts, tests and the docs, signed with --key (a
// PEM private key or an HMAC secret file) or else RELAY_AUTH_HMAC_SECRET_FILE,
// with iss/aud from RELAY_AUTH_ISSUER/RELAY_AUTH_AUDIENCE. The token goes to
// stdout and nowhere else.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var send, watch, control patternList
	fs.Var(&send, "send", "channel pattern the holder may send to (repeatable or comma-separated; * one token, > the rest)")
	fs.Var(&watch, "watch", "channel pattern the holder may watch")
	fs.Var(&control, "control", "channel pattern the holder may write back to senders on")
	sub := fs.String("sub", "", "who holds the token (the sub claim; shown in relay's logs)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid (its exp)")
	keyFile := fs.String("key", "", "signing key: a PEM private key (RS256, ES256/384/512, EdDSA) or an HMAC secret file (HS256); default RELAY_AUTH_HMAC_SECRET_FILE")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay token [--send P] [--watch P] [--control P] [--sub NAME] [--ttl 1h] [--key FILE]\n  prints a token (JWT) for RELAY_AUTH=jwt")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if len(send)+len(watch)+len(control) == 0 {
		fmt.Fprintln(stderr, "relay token: give at least one of --send, --watch, --control (a token without permissions allows nothing)")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "relay token: --ttl must be positive (every token expires)")
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(stderr, "relay token: %v\n", err)
		return 2
	}
	file := *keyFile
	if file == "" {
		file = cfg.HMACSecretFile
	}
	if file == "" {
		fmt.Fprintln(stderr, "relay token: no key: pass --key FILE or set RELAY_AUTH_HMAC_SECRET_FILE")
		return 2
	}
	key, err := auth.LoadSigningKey(file)
	if err != nil {
		fmt.Fprintf(stderr, "relay token: %v\n", err)
		return 2
	}
	tok, err := auth.Mint(key, auth.MintOptions{
		Subject:     *sub,
		Permissions: auth.Permissions{Send: send, Watch: watch, Control: control},
		TTL:         *ttl,
		Issuer:      cfg.Issuer,
		Audience:    cfg.Audience,
	})
	if err != nil {
		fmt.Fprintf(stderr, "relay token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
