package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relaydev/relay/shared/auth"
)

// AuthKeys are real keys written to files in a test's temporary directory:
// an HMAC secret (RELAY_AUTH_HMAC_SECRET_FILE) and an ECDSA P-256 key pair
// whose public half is in a PEM bundle (RELAY_AUTH_PUBLIC_KEYS_FILE) and
// whose private half is in ECPrivateFile (for relay token --key).
type AuthKeys struct {
	HMACFile, PublicFile, ECPrivateFile string
	HMAC, EC                            auth.SigningKey
}

// NewAuthKeys makes fresh keys for one test.
func NewAuthKeys(t testing.TB) AuthKeys {
	t.Helper()
	dir := t.TempDir()
	k := AuthKeys{
		HMACFile:      filepath.Join(dir, "hmac.secret"),
		PublicFile:    filepath.Join(dir, "public.pem"),
		ECPrivateFile: filepath.Join(dir, "ec.pem"),
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	text := []byte(hex.EncodeToString(secret) + "\n") // as an operator would write it: text, newline
	must(t, os.WriteFile(k.HMACFile, text, 0o600))
	var err error
	if k.HMAC, err = auth.LoadSigningKey(k.HMACFile); err != nil {
		t.Fatal(err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	must(t, err)
	must(t, os.WriteFile(k.ECPrivateFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	must(t, err)
	must(t, os.WriteFile(k.PublicFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))
	if k.EC, err = auth.LoadSigningKey(k.ECPrivateFile); err != nil {
		t.Fatal(err)
	}
	return k
}

// Options returns auth.Options for RELAY_AUTH=jwt with both key files.
func (k AuthKeys) Options(t testing.TB) auth.Options {
	return auth.Options{Mode: auth.ModeJWT, HMACSecretFile: k.HMACFile, PublicKeysFile: k.PublicFile,
		ClockSkew: 30 * time.Second, Logger: Logger(t)}
}

// Token mints an HS256 token for sub with perms, valid for ttl.
func (k AuthKeys) Token(t testing.TB, sub string, perms auth.Permissions, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint(k.HMAC, auth.MintOptions{Subject: sub, Permissions: perms, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
