package main

import (
	"cmp"
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

const tokenUsage = `usage: relay token [--send P] [--watch P] [--control P] [--sub NAME] [--ttl 1h] [--key FILE]

Prints a token (JWT) for RELAY_AUTH=jwt on stdout, and nowhere else. Each of
--send, --watch, --control takes channel patterns (repeat the flag or separate
with commas; * matches one token, > the rest). The token is signed with --key
(a PEM private key: RS256, ES256/384/512 or EdDSA by its type; or an HMAC
secret file) or else RELAY_AUTH_HMAC_SECRET_FILE (HS256), and carries
RELAY_AUTH_ISSUER / RELAY_AUTH_AUDIENCE as iss / aud when they are set.

  relay token --send 'sensors.>' --sub device-7 --ttl 24h
  relay token --watch 'sensors.*' --sub dashboard --key ec-private.pem
`

// token mints a JWT for scripts, tests and the docs.
func token(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("token")
	var send, watch, control patternList
	fs.Var(&send, "send", "channel pattern the holder may send to")
	fs.Var(&watch, "watch", "channel pattern the holder may watch")
	fs.Var(&control, "control", "channel pattern the holder may write back to senders on")
	sub := fs.String("sub", "", "who holds the token (the sub claim, shown in relay's logs)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid (its exp)")
	keyFile := fs.String("key", "", "signing key file (default RELAY_AUTH_HMAC_SECRET_FILE)")
	pos, code, ok := parseFlags(fs, tokenUsage, args, stdout, stderr)
	if !ok {
		return code
	}
	if code, ok := checkArgs(stderr, "token", "no arguments", pos, 0, 0); !ok {
		return code
	}
	if len(send)+len(watch)+len(control) == 0 {
		return usageError(stderr, "token", "give at least one of --send, --watch, --control (a token without permissions allows nothing)")
	}
	if *ttl <= 0 {
		return usageError(stderr, "token", "--ttl must be positive (every token expires)")
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(stderr, "relay token: %v\n", err)
		return 2
	}
	file := cmp.Or(*keyFile, cfg.HMACSecretFile)
	if file == "" {
		return usageError(stderr, "token", "no key: pass --key FILE or set RELAY_AUTH_HMAC_SECRET_FILE")
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
