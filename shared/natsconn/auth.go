package natsconn

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Auth is how relay proves itself to NATS and checks the servers: at most
// one of CredsFile, NkeySeedFile, User (+PasswordFile) and TokenFile, and
// optionally TLS. Secrets are read from files, never from the environment
// or the URL, so they cannot end up in a process listing or a log line.
type Auth struct {
	CredsFile    string // user JWT + nkey seed (decentralised auth); re-read on every connect
	NkeySeedFile string // an nkey seed (SU…)
	User         string
	PasswordFile string // the password of User; re-read on every connect
	TokenFile    string // a token; re-read on every connect

	TLSCAFile   string // CA bundle for the servers' certificates; setting any TLS file requires TLS
	TLSCertFile string // client certificate, for servers that verify clients
	TLSKeyFile  string
}

// Options returns the nats.go options for a; files that must be read now
// (an nkey seed, the TLS files) are checked here, so a bad file fails the
// start with its name.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.CredsFile != "":
		if err := readable(a.CredsFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsconn: nkey seed %s: %w", a.NkeySeedFile, err)
		}
		opts = append(opts, o)
	case a.User != "":
		if _, err := secret(a.PasswordFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfoHandler(func() (string, string) {
			p, _ := secret(a.PasswordFile) // a failed read fails the auth, which nats.go reports
			return a.User, p
		}))
	case a.TokenFile != "":
		if _, err := secret(a.TokenFile); err != nil {
			return nil, err
		}
		opts = append(opts, nats.TokenHandler(func() string {
			t, _ := secret(a.TokenFile)
			return t
		}))
	}
	if a.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(a.TLSCAFile))
	}
	if a.TLSCertFile != "" || a.TLSKeyFile != "" {
		if a.TLSCertFile == "" || a.TLSKeyFile == "" {
			return nil, errors.New("natsconn: a TLS client certificate needs both the certificate and the key file")
		}
		opts = append(opts, nats.ClientCert(a.TLSCertFile, a.TLSKeyFile))
	}
	return opts, nil
}

// secret reads a one-line secret file, without its trailing newline.
func secret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("natsconn: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("natsconn: %s is empty", path)
	}
	return s, nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("natsconn: %w", err)
	}
	return f.Close()
}
