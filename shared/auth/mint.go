package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SigningKey mints tokens: an HMAC secret or a private key, with the alg
// that goes with it and an optional kid.
type SigningKey struct {
	Method jwt.SigningMethod
	Key    any // []byte for HMAC, else a crypto.Signer
	Kid    string
}

// LoadSigningKey reads a key file for minting: a PEM private key (PKCS#8,
// EC or PKCS#1 RSA; a `kid: NAME` PEM header is copied into tokens) or,
// anything else, an HMAC secret as RELAY_AUTH_HMAC_SECRET_FILE holds it.
func LoadSigningKey(file string) (SigningKey, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return SigningKey{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		secret, err := readHMACSecret(file)
		if err != nil {
			return SigningKey{}, fmt.Errorf("%s: %w", file, err)
		}
		return SigningKey{Method: jwt.SigningMethodHS256, Key: secret}, nil
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return SigningKey{}, fmt.Errorf("%s: PEM block %q is not a private key", file, block.Type)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("%s: %w", file, err)
	}
	sk, err := SigningKeyFor(k.(crypto.Signer))
	if err != nil {
		return SigningKey{}, fmt.Errorf("%s: %w", file, err)
	}
	sk.Kid = block.Headers["kid"]
	return sk, nil
}

// SigningKeyFor returns the SigningKey for a private key, with the alg its
// type and curve call for (RS256, ES256/384/512, EdDSA).
func SigningKeyFor(k crypto.Signer) (SigningKey, error) {
	switch key := k.(type) {
	case *rsa.PrivateKey:
		return SigningKey{Method: jwt.SigningMethodRS256, Key: key}, nil
	case *ecdsa.PrivateKey:
		switch key.Curve {
		case elliptic.P256():
			return SigningKey{Method: jwt.SigningMethodES256, Key: key}, nil
		case elliptic.P384():
			return SigningKey{Method: jwt.SigningMethodES384, Key: key}, nil
		case elliptic.P521():
			return SigningKey{Method: jwt.SigningMethodES512, Key: key}, nil
		}
	case ed25519.PrivateKey:
		return SigningKey{Method: jwt.SigningMethodEdDSA, Key: key}, nil
	}
	return SigningKey{}, fmt.Errorf("unsupported private key type %T", k)
}

// MintOptions describe a token to mint.
type MintOptions struct {
	Subject     string
	Permissions Permissions
	TTL         time.Duration
	Issuer      string
	Audience    string
	NotBefore   time.Time // zero: none
	Now         time.Time // zero: time.Now()
}

// Mint signs a token with the `relay` claim and exp = now + TTL.
func Mint(k SigningKey, o MintOptions) (string, error) {
	if o.TTL <= 0 {
		return "", errors.New("auth: mint: ttl must be positive (exp is required)")
	}
	if err := o.Permissions.validate(); err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   o.Subject,
			Issuer:    o.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(o.TTL)),
		},
		Relay: &o.Permissions,
	}
	if o.Audience != "" {
		c.Audience = jwt.ClaimStrings{o.Audience}
	}
	if !o.NotBefore.IsZero() {
		c.NotBefore = jwt.NewNumericDate(o.NotBefore)
	}
	t := jwt.NewWithClaims(k.Method, c)
	if k.Kid != "" {
		t.Header["kid"] = k.Kid
	}
	return t.SignedString(k.Key)
}
