package natsconn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/relaydev/relay/shared/natsconn"
	"github.com/relaydev/relay/shared/testutil"
)

// relayPermissions is what compose and Helm give relay's NATS user: its
// subject prefix, the JetStream API and replies, nothing else.
func relayPermissions() *server.Permissions {
	allow := []string{"relay.>", "$JS.API.>", "_INBOX.>"}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: allow},
		Subscribe: &server.SubjectPermission{Allow: allow},
	}
}

func startServer(t *testing.T, edit func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true}
	edit(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connect(t *testing.T, url string, a natsconn.Auth) (*nats.Conn, error) {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), natsconn.Options{
		URLs: []string{url}, RetryWindow: 300 * time.Millisecond, Auth: a, Logger: testutil.Logger(t),
	})
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

func TestUserPasswordFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "relay", Password: "s3cret-pw", Permissions: relayPermissions()}}
	})
	good := testutil.WriteFile(t, dir, "pw", []byte("s3cret-pw\n"))
	bad := testutil.WriteFile(t, dir, "bad", []byte("wrong"))
	nc, err := connect(t, s.ClientURL(), natsconn.Auth{User: "relay", PasswordFile: good})
	if err != nil {
		t.Fatal(err)
	}
	// Inside the prefix: allowed. Outside: the server refuses.
	errs := make(chan error, 4)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if _, err := nc.SubscribeSync("relay.ch.a"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync("other.>"); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("async error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscribing outside relay.> was not refused")
	}

	_, err = connect(t, s.ClientURL(), natsconn.Auth{User: "relay", PasswordFile: bad})
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password: %v (must fail without echoing the secret)", err)
	}
	if _, err := connect(t, s.ClientURL(), natsconn.Auth{}); err == nil {
		t.Fatal("a client without credentials connected")
	}
}

// TestAnonymousCannotReadChannels: with authorization on, a NATS client
// without credentials cannot read relay.ch.>, and relay's own user can.
func TestAnonymousCannotReadChannels(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "relay", Password: "pw", Permissions: relayPermissions()}}
	})
	_, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0))
	if err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connect: %v, want an authorization violation", err)
	}
	nc, err := connect(t, s.ClientURL(), natsconn.Auth{User: "relay", PasswordFile: testutil.WriteFile(t, dir, "pw", []byte("pw"))})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("relay.ch.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Publish("relay.ch.x", []byte("hi"))
	if m, err := sub.NextMsg(10 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("relay's user: %v %v", m, err)
	}
}

func TestTokenAndNkey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := startServer(t, func(o *server.Options) { o.Authorization = "tok-123" })
	if _, err := connect(t, ts.ClientURL(), natsconn.Auth{TokenFile: testutil.WriteFile(t, dir, "tok", []byte("tok-123\n"))}); err != nil {
		t.Fatalf("token: %v", err)
	}

	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	ns := startServer(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub, Permissions: relayPermissions()}} })
	if _, err := connect(t, ns.ClientURL(), natsconn.Auth{NkeySeedFile: testutil.WriteFile(t, dir, "seed", seed)}); err != nil {
		t.Fatalf("nkey: %v", err)
	}
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	if _, err := connect(t, ns.ClientURL(), natsconn.Auth{NkeySeedFile: testutil.WriteFile(t, dir, "other", otherSeed)}); err == nil {
		t.Fatal("an unknown nkey connected")
	}
	if _, err := (natsconn.Auth{NkeySeedFile: dir + "/missing"}).Options(); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing seed file: %v", err)
	}
}

func TestTLSAndClientCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, "nats CA")
	cert, key := ca.Issue(t, "nats")
	kp, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(o *server.Options) {
		o.TLS, o.TLSVerify = true, true
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{kp}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	})
	url := strings.Replace(s.ClientURL(), "127.0.0.1", "localhost", 1)
	caFile := testutil.WriteFile(t, dir, "ca.pem", ca.CertPEM)
	cc, ck := ca.Issue(t, "relay")
	certFile, keyFile := testutil.WriteFile(t, dir, "c.pem", cc), testutil.WriteFile(t, dir, "k.pem", ck)
	nc, err := connect(t, url, natsconn.Auth{TLSCAFile: caFile, TLSCertFile: certFile, TLSKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Fatalf("not TLS: %v", err)
	}
	if _, err := connect(t, url, natsconn.Auth{TLSCAFile: caFile}); err == nil {
		t.Fatal("connected without the client certificate the server requires")
	}
	if _, err := connect(t, url, natsconn.Auth{}); err == nil {
		t.Fatal("connected without trusting the server's CA")
	}
}
