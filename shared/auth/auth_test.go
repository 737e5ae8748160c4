package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/relaydev/relay/shared/auth"
	"github.com/relaydev/relay/shared/testutil"
)

var everything = auth.Permissions{Send: []string{">"}, Watch: []string{">"}, Control: []string{">"}}

func newAuth(t testing.TB, o auth.Options) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(mod func(*auth.Claims)) auth.Claims {
	now := time.Now()
	c := auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "dev1", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))},
		Relay:            &auth.Permissions{Send: []string{"sensors.>"}, Watch: []string{"sensors.*"}},
	}
	if mod != nil {
		mod(&c)
	}
	return c
}

// TestRefusals: every way a token can be wrong, with its exact reply text
// and reason, on an Authenticator with an HMAC secret and an EC public key.
func TestRefusals(t *testing.T) {
	t.Parallel()
	keys := testutil.NewAuthKeys(t)
	o := keys.Options(t)
	o.Issuer, o.Audience = "https://issuer.example", "relay"
	a := newAuth(t, o)
	good := func(c *auth.Claims) { c.Issuer = "https://issuer.example"; c.Audience = jwt.ClaimStrings{"relay"} }
	with := func(mods ...func(*auth.Claims)) auth.Claims {
		return claims(func(c *auth.Claims) {
			good(c)
			for _, m := range mods {
				m(c)
			}
		})
	}
	hmac := keys.HMAC.Key
	ec := keys.EC.Key
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.(*ecdsa.PrivateKey).PublicKey)
	noneTok, _ := jwt.NewWithClaims(jwt.SigningMethodNone, with()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	// The classic confusion: an HMAC token keyed with the public key's bytes.
	confused := sign(t, jwt.SigningMethodHS256, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}), with(), "")
	ed := ed25519.NewKeyFromSeed(make([]byte, 32))
	past := time.Now().Add(-time.Hour)

	cases := []struct {
		name  string
		token string
		act   auth.Action
		want  *auth.Refusal
	}{
		{"no token", "", auth.ActionSend, auth.ErrMissing},
		{"malformed", "not-a-jwt", auth.ActionSend, auth.ErrMalformed},
		{"malformed base64", "eyJ!.eyJ.sig", auth.ActionSend, auth.ErrMalformed},
		{"alg none", noneTok, auth.ActionSend, auth.ErrAlgNotAllowed},
		{"alg/key mismatch: HMAC keyed with the public key", confused, auth.ActionSend, auth.ErrBadSignature},
		{"alg/key mismatch: EdDSA with no Ed25519 key", sign(t, jwt.SigningMethodEdDSA, ed, with(), ""), auth.ActionSend, auth.ErrAlgNotAllowed},
		{"alg/key mismatch: ES384 for a P-256 key", sign(t, jwt.SigningMethodES384, mustEC(t, elliptic.P384()), with(), ""), auth.ActionSend, auth.ErrAlgNotAllowed},
		{"wrong HMAC key", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), with(), ""), auth.ActionSend, auth.ErrBadSignature},
		{"wrong EC key", sign(t, jwt.SigningMethodES256, otherEC, with(), ""), auth.ActionSend, auth.ErrBadSignature},
		{"expired", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(past) }), ""), auth.ActionSend, auth.ErrExpired},
		{"no exp", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.ExpiresAt = nil }), ""), auth.ActionSend, auth.ErrNoExpiry},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), ""), auth.ActionSend, auth.ErrNotYetValid},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.Issuer = "mallory" }), ""), auth.ActionSend, auth.ErrWrongIssuer},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other"} }), ""), auth.ActionSend, auth.ErrWrongAudience},
		{"bad relay claim", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.Relay = &auth.Permissions{Send: []string{"a b"}} }), ""), auth.ActionSend, auth.ErrBadRelayClaim},
		{"valid send (sensors.> covers sensors.room1)", sign(t, jwt.SigningMethodHS256, hmac, with(), ""), auth.ActionSend, nil},
		{"forbidden watch of another channel", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.Relay.Watch = []string{"other"} }), ""), auth.ActionWatch, auth.Forbidden(auth.ActionWatch)},
		{"forbidden control (no control claim)", sign(t, jwt.SigningMethodES256, ec, with(), ""), auth.ActionControl, auth.Forbidden(auth.ActionControl)},
		{"no relay claim at all", sign(t, jwt.SigningMethodES256, ec, with(func(c *auth.Claims) { c.Relay = nil }), ""), auth.ActionWatch, auth.Forbidden(auth.ActionWatch)},
		{"valid HS256", sign(t, jwt.SigningMethodHS256, hmac, with(), ""), auth.ActionWatch, nil},
		{"valid ES256", sign(t, jwt.SigningMethodES256, ec, with(), ""), auth.ActionWatch, nil},
		{"expired within the clock skew", sign(t, jwt.SigningMethodHS256, hmac, with(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-10 * time.Second)) }), ""), auth.ActionWatch, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := a.Authorize(c.token, c.act, "sensors.room1")
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if id.Sub != "dev1" || id.Expires.IsZero() {
					t.Fatalf("identity %+v: want sub dev1 and an expiry", id)
				}
				return
			}
			var r *auth.Refusal
			if !errors.As(err, &r) {
				t.Fatalf("err = %v, want %q", err, c.want.Text)
			}
			if r.Text != c.want.Text || r.Reason != c.want.Reason {
				t.Fatalf("refusal %q (%s), want %q (%s)", r.Text, r.Reason, c.want.Text, c.want.Reason)
			}
			if c.token != "" && strings.Contains(r.Text, c.token) {
				t.Fatal("the refusal text contains the token")
			}
			if len(r.Text) > 123 {
				t.Fatalf("refusal %q longer than a WebSocket close reason may be", r.Text)
			}
		})
	}
}

func mustEC(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPublicPatternsAndOff(t *testing.T) {
	t.Parallel()
	keys := testutil.NewAuthKeys(t)
	o := keys.Options(t)
	o.PublicWatch = []string{"public.>"}
	o.PublicSend = []string{"inbox.*"}
	a := newAuth(t, o)
	for _, c := range []struct {
		act     auth.Action
		channel string
		want    bool
	}{
		{auth.ActionWatch, "public.board", true},
		{auth.ActionSend, "public.board", false},
		{auth.ActionSend, "inbox.alice", true},
		{auth.ActionWatch, "inbox.alice", false},
		{auth.ActionControl, "public.board", false},
		{auth.ActionWatch, "secret", false},
	} {
		_, err := a.Authorize("", c.act, c.channel)
		if (err == nil) != c.want {
			t.Errorf("%s %s without a token: err = %v, want allowed=%v", c.act, c.channel, err, c.want)
		}
	}
	off := newAuth(t, auth.Options{Mode: auth.ModeOff})
	if _, err := off.Authorize("", auth.ActionWatch, "secret"); err != nil || off.Enabled() {
		t.Fatalf("auth off refused: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	priv := filepath.Join(dir, "priv.pem")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), 0o600)
	for _, c := range []struct {
		o    auth.Options
		want string
	}{
		{auth.Options{Mode: auth.ModeJWT}, "no keys"},
		{auth.Options{Mode: "maybe"}, "must be off or jwt"},
		{auth.Options{Mode: auth.ModeJWT, HMACSecretFile: filepath.Join(dir, "missing")}, "RELAY_AUTH_HMAC_SECRET_FILE"},
		{auth.Options{Mode: auth.ModeJWT, HMACSecretFile: short}, "need at least 32"},
		{auth.Options{Mode: auth.ModeJWT, PublicKeysFile: priv}, "private key does not belong"},
		{auth.Options{Mode: auth.ModeJWT, PublicKeysFile: short}, "no PEM public keys"},
	} {
		_, err := auth.New(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", c.o, err, c.want)
		}
	}
}

// TestJWKS verifies RS256, ES256 and EdDSA tokens against a JWKS file, `kid`
// selecting the key, and refuses an alg the named key does not fit.
func TestJWKS(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := mustEC(t, elliptic.P256())
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	file := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, file, map[string]any{"rsa1": &rsaKey.PublicKey, "ec1": &ecKey.PublicKey, "ed1": edKey.Public()})
	o := auth.Options{Mode: auth.ModeJWT, PublicKeysFile: file, Logger: testutil.Logger(t)}
	a := newAuth(t, o)
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		want   *auth.Refusal
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey, "rsa1", nil},
		{"PS256", jwt.SigningMethodPS256, rsaKey, "rsa1", nil},
		{"ES256", jwt.SigningMethodES256, ecKey, "ec1", nil},
		{"EdDSA", jwt.SigningMethodEdDSA, edKey, "ed1", nil},
		{"EdDSA without kid", jwt.SigningMethodEdDSA, edKey, "", nil},
		{"unknown kid", jwt.SigningMethodES256, ecKey, "nope", auth.ErrUnknownKey},
		{"ES256 naming the RSA key", jwt.SigningMethodES256, ecKey, "rsa1", auth.ErrAlgNotAllowed},
		{"HS256 without an HMAC secret", jwt.SigningMethodHS256, []byte(strings.Repeat("k", 32)), "", auth.ErrAlgNotAllowed},
	} {
		tok := sign(t, c.method, c.key, claims(nil), c.kid)
		_, err := a.Authorize(tok, auth.ActionWatch, "sensors.a")
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != nil && (err == nil || err.Error() != c.want.Text):
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want.Text)
		}
	}
}

func writeJWKS(t *testing.T, file string, keys map[string]any) {
	t.Helper()
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	var out []map[string]string
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			out = append(out, map[string]string{"kty": "RSA", "kid": kid, "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			b, _ := k.Bytes()
			size := (len(b) - 1) / 2
			out = append(out, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(b[1 : 1+size]), "y": b64(b[1+size:])})
		case ed25519.PublicKey:
			out = append(out, map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)})
		}
	}
	b, _ := json.Marshal(map[string]any{"keys": out})
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestKeyRotation rewrites the public keys file: a token of the new key is
// accepted and one of the removed key refused, without a restart; a broken
// rewrite keeps the last good keys.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := mustEC(t, elliptic.P256()), mustEC(t, elliptic.P256())
	file := filepath.Join(t.TempDir(), "keys.json")
	writeJWKS(t, file, map[string]any{"k1": &oldKey.PublicKey})
	a := newAuth(t, auth.Options{Mode: auth.ModeJWT, PublicKeysFile: file, Logger: testutil.Logger(t), ReloadInterval: 10 * time.Millisecond})
	oldTok := sign(t, jwt.SigningMethodES256, oldKey, claims(nil), "k1")
	newTok := sign(t, jwt.SigningMethodES256, newKey, claims(nil), "k2")
	if _, err := a.Verify(oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	if _, err := a.Verify(newTok); err == nil {
		t.Fatal("new key accepted before rotation")
	}

	// A half-written file is ignored: the old key keeps working.
	os.WriteFile(file, []byte(`{"keys": [`), 0o644)
	time.Sleep(50 * time.Millisecond) // past the reload interval, so the broken file is read
	if _, err := a.Verify(oldTok); err != nil {
		t.Fatalf("old key after a broken rewrite: %v", err)
	}

	writeJWKS(t, file, map[string]any{"k2": &newKey.PublicKey})
	testutil.Eventually(t, 10*time.Second, func() error {
		_, err := a.Verify(newTok)
		return err
	})
	if _, err := a.Verify(oldTok); err == nil || err.Error() != auth.ErrUnknownKey.Text {
		t.Fatalf("old key after rotation: err = %v, want %q", err, auth.ErrUnknownKey.Text)
	}
}

func TestMintWithEachKeyType(t *testing.T) {
	t.Parallel()
	keys := testutil.NewAuthKeys(t)
	a := newAuth(t, keys.Options(t))
	for _, k := range []auth.SigningKey{keys.HMAC, keys.EC} {
		tok, err := auth.Mint(k, auth.MintOptions{Subject: "s", Permissions: everything, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.Authorize(tok, auth.ActionControl, "a.b")
		if err != nil || id.Sub != "s" {
			t.Fatalf("%s: %+v %v", k.Method.Alg(), id, err)
		}
		if d := time.Until(id.Expires); d < time.Minute || d > time.Minute+31*time.Second {
			t.Fatalf("expires in %s, want exp + 30s skew", d)
		}
	}
	if _, err := auth.Mint(keys.HMAC, auth.MintOptions{TTL: 0}); err == nil {
		t.Fatal("minted a token without exp")
	}
}

// BenchmarkAuthorize is the CPU one handshake or upgrade spends in auth:
// parse, verify, check claims and match the channel.
func BenchmarkAuthorize(b *testing.B) {
	keys := testutil.NewAuthKeys(b)
	a, err := auth.New(keys.Options(b))
	if err != nil {
		b.Fatal(err)
	}
	for name, k := range map[string]auth.SigningKey{"HS256": keys.HMAC, "ES256": keys.EC} {
		tok, err := auth.Mint(k, auth.MintOptions{Subject: "bench", Permissions: auth.Permissions{Watch: []string{"sensors.>"}}, TTL: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := a.Authorize(tok, auth.ActionWatch, "sensors.room1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
