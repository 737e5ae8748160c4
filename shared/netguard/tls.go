package netguard

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// checkEvery is how often a handshake may stat the certificate files.
// Rotation tools replace files atomically (write and rename, or the
// Kubernetes Secret symlink swap), so a changed size or mtime is a new
// version; a second's delay is invisible to them and keeps stat calls off
// the handshake path.
const checkEvery = time.Second

// fileVersion is what tells a file changed.
type fileVersion struct {
	mod  time.Time
	size int64
}

func versionOf(path string) (fileVersion, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileVersion{}, err
	}
	return fileVersion{fi.ModTime(), fi.Size()}, nil
}

// reloader holds a value loaded from files and loads it again when one of
// them changes. A reload that fails keeps the value in use and is logged:
// a half-written rotation must not take the service down.
type reloader[T any] struct {
	what  string
	files []string
	load  func() (T, error)
	log   *slog.Logger

	mu        sync.Mutex
	val       T
	versions  []fileVersion
	lastCheck time.Time
	failed    []fileVersion // versions whose load failed, not retried
}

func newReloader[T any](what string, files []string, log *slog.Logger, load func() (T, error)) (*reloader[T], error) {
	r := &reloader[T]{what: what, files: files, load: load, log: log}
	vs, err := r.stat()
	if err != nil {
		return nil, err
	}
	if r.val, err = load(); err != nil {
		return nil, err
	}
	r.versions, r.lastCheck = vs, time.Now()
	return r, nil
}

func (r *reloader[T]) stat() ([]fileVersion, error) {
	vs := make([]fileVersion, len(r.files))
	for i, f := range r.files {
		v, err := versionOf(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.what, err)
		}
		vs[i] = v
	}
	return vs, nil
}

func equalVersions(a, b []fileVersion) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].mod.Equal(b[i].mod) || a[i].size != b[i].size {
			return false
		}
	}
	return true
}

// get returns the current value, reloading it first when a file changed.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastCheck) < checkEvery {
		return r.val
	}
	r.lastCheck = now
	vs, err := r.stat()
	if err != nil || equalVersions(vs, r.versions) || equalVersions(vs, r.failed) {
		return r.val
	}
	v, err := r.load()
	if err != nil {
		r.failed = vs
		r.log.Error("reload failed; still using the previous version", "what", r.what, "err", err)
		return r.val
	}
	r.val, r.versions, r.failed = v, vs, nil
	r.log.Info("reloaded", "what", r.what, "files", r.files)
	return r.val
}

// TLSFiles names the PEM files of a TLS server.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, is the CA bundle client certificates must
	// chain to; RequireClientCert makes one mandatory (mTLS).
	ClientCAFile      string
	RequireClientCert bool
}

// ServerConfig returns a TLS server configuration (TLS 1.2 or later, HTTP/1.1
// only, since WebSockets need it) whose certificate and client CA bundle
// are re-read when their files change: handshakes after the change use the
// new files, connections already open keep theirs. A missing or bad file
// fails here, at start.
func ServerConfig(f TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if log == nil {
		log = slog.Default()
	}
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("netguard: TLS needs a certificate file and a key file")
	}
	certs, err := newReloader("TLS certificate", []string{f.CertFile, f.KeyFile}, log, func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("netguard: TLS certificate %s / key %s: %w", f.CertFile, f.KeyFile, err)
		}
		return &c, nil
	})
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return certs.get(), nil
		},
	}
	if f.RequireClientCert && f.ClientCAFile == "" {
		return nil, errors.New("netguard: client certificates required but no client CA file")
	}
	if f.ClientCAFile == "" {
		return base, nil
	}
	cas, err := newReloader("TLS client CA", []string{f.ClientCAFile}, log, func() (*x509.CertPool, error) {
		b, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("netguard: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("netguard: client CA %s: no PEM certificates in it", f.ClientCAFile)
		}
		return pool, nil
	})
	if err != nil {
		return nil, err
	}
	base.ClientAuth = tls.VerifyClientCertIfGiven
	if f.RequireClientCert {
		base.ClientAuth = tls.RequireAndVerifyClientCert
	}
	base.ClientCAs = cas.get()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = cas.get()
		return c, nil
	}
	return base, nil
}
