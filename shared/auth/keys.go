package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinHMACSecret is the shortest HMAC secret accepted, in bytes: RFC 7518
// asks for a key at least as long as the hash (HS256: 256 bits).
const MinHMACSecret = 32

// publicKey is one verification key with its optional `kid` and `alg`.
type publicKey struct {
	kid string
	alg string // from a JWKS entry; empty: any alg of the key's type
	key crypto.PublicKey
}

// keySet is one loaded generation of keys; it is never modified.
type keySet struct {
	hmac []byte
	pub  []publicKey
}

// keyring holds the current keySet and re-reads the files when they change.
// Checking happens on use, at most once per interval: a stat of each file,
// and a parse only when one changed. A file that fails to parse keeps the
// previous keys in use (logged), so a half-written rotation cannot lock
// everyone out.
type keyring struct {
	hmacFile, pubFile string
	interval          time.Duration
	log               *slog.Logger

	cur       atomic.Pointer[keySet]
	nextCheck atomic.Int64 // unix nanos
	mu        sync.Mutex   // one reload at a time
	hmacStat  os.FileInfo
	pubStat   os.FileInfo
	lastErr   string
}

func newKeyring(hmacFile, pubFile string, interval time.Duration, log *slog.Logger) (*keyring, error) {
	if hmacFile == "" && pubFile == "" {
		return nil, errors.New("auth: no keys: set RELAY_AUTH_HMAC_SECRET_FILE and/or RELAY_AUTH_PUBLIC_KEYS_FILE")
	}
	kr := &keyring{hmacFile: hmacFile, pubFile: pubFile, interval: interval, log: log}
	ks, hs, ps, err := kr.load()
	if err != nil {
		return nil, err
	}
	kr.cur.Store(ks)
	kr.hmacStat, kr.pubStat = hs, ps
	kr.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return kr, nil
}

// load reads both files.
func (kr *keyring) load() (*keySet, os.FileInfo, os.FileInfo, error) {
	ks := &keySet{}
	var hs, ps os.FileInfo
	var errs []error
	if kr.hmacFile != "" {
		var err error
		hs, err = os.Stat(kr.hmacFile)
		if err == nil {
			ks.hmac, err = readHMACSecret(kr.hmacFile)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("RELAY_AUTH_HMAC_SECRET_FILE: %w", err))
		}
	}
	if kr.pubFile != "" {
		var err error
		ps, err = os.Stat(kr.pubFile)
		if err == nil {
			var b []byte
			if b, err = os.ReadFile(kr.pubFile); err == nil {
				ks.pub, err = ParsePublicKeys(b)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("RELAY_AUTH_PUBLIC_KEYS_FILE: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, fmt.Errorf("auth: %w", err)
	}
	return ks, hs, ps, nil
}

// current returns the keys, first re-reading the files if one changed.
func (kr *keyring) current() *keySet {
	now := time.Now().UnixNano()
	if now >= kr.nextCheck.Load() && kr.mu.TryLock() {
		kr.nextCheck.Store(now + int64(kr.interval))
		kr.reloadLocked()
		kr.mu.Unlock()
	}
	return kr.cur.Load()
}

func (kr *keyring) reloadLocked() {
	if !changed(kr.hmacFile, kr.hmacStat) && !changed(kr.pubFile, kr.pubStat) {
		return
	}
	ks, hs, ps, err := kr.load()
	if err != nil {
		// Keep the keys that work; say so once per distinct problem.
		if msg := err.Error(); msg != kr.lastErr {
			kr.lastErr = msg
			kr.log.Warn("auth: key files changed but could not be loaded; keeping the previous keys", "err", err)
		}
		return
	}
	kr.lastErr = ""
	kr.cur.Store(ks)
	kr.hmacStat, kr.pubStat = hs, ps
	kr.log.Info("auth: keys reloaded", "hmac", ks.hmac != nil, "public_keys", len(ks.pub))
}

// changed reports whether file differs from what was loaded (another file
// swapped in, as a Kubernetes Secret update does, or rewritten in place).
func changed(file string, was os.FileInfo) bool {
	if file == "" {
		return false
	}
	now, err := os.Stat(file)
	if err != nil || was == nil {
		return true
	}
	return !os.SameFile(now, was) || !now.ModTime().Equal(was.ModTime()) || now.Size() != was.Size()
}

// keyFunc picks the keys that may verify t, pinning the alg to the key type:
// an HMAC alg only ever meets the HMAC secret, an asymmetric alg only the
// public keys of its type (and curve). With a `kid` that names a key, only
// that key; otherwise every key of the right type without a kid, or any with
// no kid in the token.
func (kr *keyring) keyFunc(t *jwt.Token) (any, error) {
	ks := kr.current()
	alg := t.Method.Alg()
	if strings.HasPrefix(alg, "HS") {
		if ks.hmac == nil {
			return nil, ErrAlgNotAllowed
		}
		return ks.hmac, nil
	}
	kid, _ := t.Header["kid"].(string)
	var named, anonymous, typed []jwt.VerificationKey
	for _, k := range ks.pub {
		if !algFitsKey(alg, k) {
			if kid != "" && k.kid == kid {
				return nil, ErrAlgNotAllowed // the named key is of another type
			}
			continue
		}
		typed = append(typed, k.key)
		switch {
		case kid != "" && k.kid == kid:
			named = append(named, k.key)
		case k.kid == "":
			anonymous = append(anonymous, k.key)
		}
	}
	switch {
	case len(named) > 0:
		return jwt.VerificationKeySet{Keys: named}, nil
	case kid == "" && len(typed) > 0:
		return jwt.VerificationKeySet{Keys: typed}, nil
	case len(anonymous) > 0:
		return jwt.VerificationKeySet{Keys: anonymous}, nil
	case len(typed) > 0:
		return nil, ErrUnknownKey
	}
	return nil, ErrAlgNotAllowed
}

// algFitsKey reports whether alg is one the key may verify.
func algFitsKey(alg string, k publicKey) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256():
			return alg == "ES256"
		case elliptic.P384():
			return alg == "ES384"
		case elliptic.P521():
			return alg == "ES512"
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func readHMACSecret(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	// A file written with echo or a text editor ends in a newline that is
	// not part of the secret.
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < MinHMACSecret {
		return nil, fmt.Errorf("secret is %d bytes; need at least %d (e.g. head -c 32 /dev/urandom | base64 > FILE)", len(b), MinHMACSecret)
	}
	return b, nil
}

// ParsePublicKeys reads a JWKS document ({"keys": [...]}) or a bundle of PEM
// blocks (PUBLIC KEY, RSA PUBLIC KEY, CERTIFICATE; a `kid: NAME` PEM header
// names a key). Every problem is reported; no key at all is an error.
func ParsePublicKeys(b []byte) ([]publicKey, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		return parseJWKS(t)
	}
	var out []publicKey
	var errs []error
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		k, err := parsePEMPublic(block)
		if err != nil {
			errs = append(errs, fmt.Errorf("PEM block %d (%s): %w", n, block.Type, err))
			continue
		}
		out = append(out, publicKey{kid: block.Headers["kid"], key: k})
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no PEM public keys and not a JWKS document"))
	}
	return out, errors.Join(errs...)
}

func parsePEMPublic(block *pem.Block) (crypto.PublicKey, error) {
	var k any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			k = cert.PublicKey
		}
	default:
		return nil, errors.New("not a public key (a private key does not belong in this file)")
	}
	if err != nil {
		return nil, err
	}
	return checkKeyType(k)
}

func checkKeyType(k any) (crypto.PublicKey, error) {
	switch key := k.(type) {
	case *rsa.PublicKey:
		if key.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits; need at least 2048", key.N.BitLen())
		}
		return key, nil
	case *ecdsa.PublicKey:
		switch key.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return key, nil
		}
		return nil, errors.New("EC key on an unsupported curve")
	case ed25519.PublicKey:
		return key, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (use RSA, ECDSA P-256/384/521 or Ed25519)", k)
}

// jwk is the subset of RFC 7517 relay reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func parseJWKS(b []byte) ([]publicKey, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var out []publicKey
	var errs []error
	for i, j := range doc.Keys {
		if j.Use == "enc" {
			continue // not for signatures
		}
		k, err := j.publicKey()
		if err == nil && j.Alg != "" && !isAllowedAlg(j.Alg) {
			err = fmt.Errorf("alg %q not supported", j.Alg)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err))
			continue
		}
		out = append(out, publicKey{kid: j.Kid, alg: j.Alg, key: k})
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("JWKS: no signature keys"))
	}
	return out, errors.Join(errs...)
}

func (j jwk) publicKey() (crypto.PublicKey, error) {
	b64 := func(s, what string) ([]byte, error) {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%s: not base64url", what)
		}
		return b, nil
	}
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := b64(j.E, "e")
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, errors.New("e: too large")
		}
		ev := int(new(big.Int).SetBytes(e).Int64())
		return checkKeyType(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev})
	case "EC":
		var curve elliptic.Curve
		switch j.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("crv %q not supported", j.Crv)
		}
		x, err := b64(j.X, "x")
		if err != nil {
			return nil, err
		}
		y, err := b64(j.Y, "y")
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return nil, errors.New("x/y: longer than the curve allows")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4 // uncompressed
		copy(point[1+size-len(x):1+size], x)
		copy(point[1+2*size-len(y):], y)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("crv %q not supported", j.Crv)
		}
		x, err := b64(j.X, "x")
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("x: not an Ed25519 public key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("kty %q not supported", j.Kty)
}
