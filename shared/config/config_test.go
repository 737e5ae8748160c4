package config

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Not parallel: these tests set environment variables.

func TestLoadDefaultsMatchTheContract(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(RoleAll); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	checks := map[string]any{
		"NATSURL": c.NATSURL, "SubjectPrefix": c.SubjectPrefix, "Listeners": c.Listeners.String(),
		"IngestHTTP": c.Ingest.HTTPAddr, "MaxMessage": c.MaxMessage, "FanoutAddr": c.Fanout.Addr,
		"ClientQueue": c.ClientQueue, "LogLevel": c.LogLevel, "LogFormat": c.LogFormat,
	}
	want := map[string]any{
		"NATSURL": "nats://127.0.0.1:4222", "SubjectPrefix": "relay", "Listeners": ":7070=default/line,:7071=*/line",
		"IngestHTTP": ":8081", "MaxMessage": 65536, "FanoutAddr": ":8080",
		// The contract's first default was 1024; since wave 2 the queue is
		// bounded by bytes ("judge draining, not size", docs/architecture.md),
		// with any message count far above what small messages reach.
		"ClientQueue": 1 << 20, "LogLevel": "info", "LogFormat": "text",
	}
	for k, v := range want {
		if checks[k] != v {
			t.Errorf("%s default = %v, want %v", k, checks[k], v)
		}
	}
}

func TestLoadReportsEveryBadValue(t *testing.T) {
	t.Setenv("RELAY_INGEST_MAX_MESSAGE", "lots")
	t.Setenv("RELAY_FANOUT_PING_INTERVAL", "often")
	t.Setenv("RELAY_FANOUT_CLIENT_QUEUE", "-")
	t.Setenv("RELAY_LOG_LEVEL", "loud")
	c, err := Load()
	if err == nil {
		t.Fatal("Load accepted bad values")
	}
	for _, name := range []string{"RELAY_INGEST_MAX_MESSAGE", "RELAY_FANOUT_PING_INTERVAL", "RELAY_FANOUT_CLIENT_QUEUE"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	if !strings.Contains(err.Error(), "e.g. 30s, 1m30s") {
		t.Errorf("a bad duration shows no valid example: %v", err)
	}
	// The rest is still loaded, so Validate can report in the same run.
	if verr := c.Validate(RoleAll); verr == nil || !strings.Contains(verr.Error(), "RELAY_LOG_LEVEL") {
		t.Fatalf("Validate = %v", verr)
	}
}

// TestLoadLeavesTheEnvironmentAlone: Load reads the environment without
// changing it (it used to unset bad values while it retried), and reads only
// RELAY_* names, not the unprefixed ones envconfig falls back to.
func TestLoadLeavesTheEnvironmentAlone(t *testing.T) {
	t.Setenv("RELAY_INGEST_MAX_MESSAGE", "lots")
	t.Setenv("RELAY_SHUTDOWN_GRACE", "soon")
	t.Setenv("LOG_LEVEL", "debug")
	t.Setenv("NATS_URL", "nats://elsewhere:4222")
	before := os.Environ()
	c, err := Load()
	if err == nil {
		t.Fatal("Load accepted bad values")
	}
	if after := os.Environ(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("Load changed the environment:\nbefore %q\nafter  %q", before, after)
	}
	if c.LogLevel != "info" || c.NATSURL != "nats://127.0.0.1:4222" {
		t.Errorf("Load read unprefixed variables: LogLevel %q, NATSURL %q", c.LogLevel, c.NATSURL)
	}
	if c.ShutdownGrace != 20*time.Second || c.MaxMessage != 65536 {
		t.Errorf("a bad value did not keep its default: grace %s, max message %d", c.ShutdownGrace, c.MaxMessage)
	}
}

// TestPerIPCapFollowsALoweredProcessCap: lowering RELAY_INGEST_MAX_CONNECTIONS
// (or the fanout's) to the per-address default or below must not let one
// address hold every slot (issue 13's lockout: 100 idle connections from one
// address with RELAY_INGEST_MAX_CONNECTIONS=100). Left unset, the per-address
// cap becomes half the process cap; set explicitly, it is the operator's.
func TestPerIPCapFollowsALoweredProcessCap(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		env                    map[string]string
		wantIngest, wantFanout int
	}{
		{"defaults", nil, 100, 1000},
		{"ingest cap lowered", map[string]string{"RELAY_INGEST_MAX_CONNECTIONS": "100"}, 50, 1000},
		{"ingest cap just above", map[string]string{"RELAY_INGEST_MAX_CONNECTIONS": "101"}, 100, 1000},
		{"fanout cap lowered", map[string]string{"RELAY_FANOUT_MAX_CONNECTIONS": "600"}, 100, 300},
		{"explicit per-ip kept", map[string]string{"RELAY_INGEST_MAX_CONNECTIONS": "100", "RELAY_INGEST_MAX_CONNECTIONS_PER_IP": "100"}, 100, 1000},
		{"explicit 0 kept", map[string]string{"RELAY_FANOUT_MAX_CONNECTIONS": "10", "RELAY_FANOUT_MAX_CONNECTIONS_PER_IP": "0"}, 100, 0},
		{"one slot", map[string]string{"RELAY_INGEST_MAX_CONNECTIONS": "1"}, 100, 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			if c.Ingest.MaxConnectionsPerIP != tt.wantIngest || c.Fanout.MaxConnectionsPerIP != tt.wantFanout {
				t.Fatalf("per-IP caps ingest %d, fanout %d; want %d, %d",
					c.Ingest.MaxConnectionsPerIP, c.Fanout.MaxConnectionsPerIP, tt.wantIngest, tt.wantFanout)
			}
		})
	}
}

// TestLoadParsesListenersOnce: RELAY_INGEST_LISTENERS is parsed by Load,
// every bad entry reported there, and the parsed listeners carried in Config.
func TestLoadParsesListenersOnce(t *testing.T) {
	for _, tt := range []struct{ spec, want string }{
		{":1=a/json", "framing"},
		{":1=a b/line", "invalid channel"},
		{":1=a/line,:1=b/line", "used twice"},
		{"", "no listeners"},
	} {
		t.Setenv("RELAY_INGEST_LISTENERS", tt.spec)
		c, err := Load()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Count(err.Error(), "RELAY_INGEST_LISTENERS") != 1 {
			t.Errorf("RELAY_INGEST_LISTENERS=%q: Load = %v, want one error about %q", tt.spec, err, tt.want)
		}
		if c.Listeners.String() != ":7070=default/line,:7071=*/line" {
			t.Errorf("RELAY_INGEST_LISTENERS=%q: Listeners = %v, want the default", tt.spec, c.Listeners)
		}
	}
	t.Setenv("RELAY_INGEST_LISTENERS", "127.0.0.1:1=x/len32, :2=*/raw")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	want := Listeners{{Addr: "127.0.0.1:1", Channel: "x", Framing: FramingLen32}, {Addr: ":2", Channel: "*", Framing: FramingRaw}}
	if !reflect.DeepEqual(c.Listeners, want) {
		t.Fatalf("Listeners = %#v", c.Listeners)
	}
}

func TestValidate(t *testing.T) {
	base, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		role   Role
		mutate func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"defaults ingest", RoleIngest, func(*Config) {}, ""},
		{"bad nats url", RoleIngest, func(c *Config) { c.NATSURL = "http://x:1" }, "RELAY_NATS_URL"},
		{"nats url ignored by all", RoleAll, func(c *Config) { c.NATSURL = "" }, ""},
		{"bad prefix", RoleFanout, func(c *Config) { c.SubjectPrefix = "a b" }, "RELAY_SUBJECT_PREFIX"},
		{"no listeners", RoleIngest, func(c *Config) { c.Listeners = nil }, "RELAY_INGEST_LISTENERS"},
		{"listeners ignored by fanout", RoleFanout, func(c *Config) { c.Listeners = nil }, ""},
		{"max message too big", RoleIngest, func(c *Config) { c.MaxMessage = 1 << 30 }, "RELAY_INGEST_MAX_MESSAGE"},
		{"zero grace", RoleAll, func(c *Config) { c.ShutdownGrace = 0 }, "RELAY_SHUTDOWN_GRACE"},
		{"negative ping", RoleFanout, func(c *Config) { c.PingInterval = -time.Second }, "RELAY_FANOUT_PING_INTERVAL"},
		{"bad fanout addr", RoleFanout, func(c *Config) { c.Fanout.Addr = "8080" }, "RELAY_FANOUT_ADDR"},
		{"bad public ingest addr", RoleFanout, func(c *Config) { c.PublicIngestAddr = "host" }, "RELAY_FANOUT_PUBLIC_INGEST_ADDR"},
		{"json logs", RoleAll, func(c *Config) { c.LogFormat = "json" }, ""},
		{"xml logs", RoleAll, func(c *Config) { c.LogFormat = "xml" }, "RELAY_LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			err := c.Validate(tt.role)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseListeners(t *testing.T) {
	ls, err := ParseListeners(" :7070=default/line , 127.0.0.1:7071=*/len32,[::1]:7072=x.y/raw")
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{Addr: ":7070", Channel: "default", Framing: FramingLine},
		{Addr: "127.0.0.1:7071", Channel: "*", Framing: FramingLen32},
		{Addr: "[::1]:7072", Channel: "x.y", Framing: FramingRaw},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %v", ls)
	}
	for i := range want {
		if !ls[i].Equal(want[i]) {
			t.Errorf("listener %d = %+v, want %+v", i, ls[i], want[i])
		}
	}
	if !ls[1].Handshake() || ls[0].Handshake() {
		t.Error("Handshake() wrong")
	}
	_, err = ParseListeners("nope,:1=a,:2=b/xml")
	if err == nil || strings.Count(err.Error(), "RELAY_INGEST_LISTENERS") != 3 {
		t.Fatalf("want three errors, got %v", err)
	}
}

// TestREADMEConfigTable keeps README.md's configuration table generated from
// the struct tags: run `go run ./cmd/relay config -markdown` to refresh it.
func TestREADMEConfigTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	Markdown(&table)
	if !bytes.Contains(readme, table.Bytes()) {
		t.Fatalf("README.md's configuration table is out of date; replace it with the output of\n  go run ./cmd/relay config -markdown\n\n%s", table.String())
	}
	for _, v := range (Config{}).Vars() {
		if v.Desc == "" {
			t.Errorf("%s has no desc tag", v.Name)
		}
	}
}

// TestAuthRefusesOpenFixedListeners: under RELAY_AUTH=jwt every fixed
// listener not marked public is an error naming it and the fix.
func TestAuthRefusesOpenFixedListeners(t *testing.T) {
	c, _ := Load()
	c.AuthMode = "jwt"
	c.HMACSecretFile = "/dev/null" // not read by Validate
	c.Listeners = MustParseListeners(":7070=default/line,:7071=*/line,:7072=board/raw;public,:7073=x/len32,:7074=y/line;allow=10.0.0.0/8")
	err := c.Validate(RoleIngest)
	if err == nil {
		t.Fatal("Validate accepted open fixed listeners under RELAY_AUTH=jwt")
	}
	for _, want := range []string{"fixed listener :7070=default/line carries no token", ":7070=default/line;public", "fixed listener :7073=x/len32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":7072") || strings.Contains(err.Error(), ":7071") || strings.Contains(err.Error(), ":7074") {
		t.Errorf("error names a public, restricted or handshake listener:\n%v", err)
	}
	if err := c.Validate(RoleFanout); err != nil {
		t.Errorf("fanout role: %v", err)
	}
	c.Listeners = MustParseListeners(":7071=*/line,:7072=board/raw;public")
	if err := c.Validate(RoleAll); err != nil {
		t.Errorf("handshake and public listeners: %v", err)
	}
	c.AuthMode, c.HMACSecretFile, c.PublicWatch = "maybe", "", []string{"a.>.b"}
	err = c.Validate(RoleAll)
	for _, want := range []string{`RELAY_AUTH="maybe"`, "RELAY_AUTH_PUBLIC_WATCH"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

// The default NATS ping settings notice a frozen or blackholed server
// within 15 s (issue 11): interval x (max outstanding + 1).
func TestDefaultPingsNoticeAFreezeWithin15s(t *testing.T) {
	t.Parallel()
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if d := c.NATSPingInterval * time.Duration(c.NATSMaxPings+1); d > 15*time.Second {
		t.Fatalf("RELAY_NATS_PING_INTERVAL x (RELAY_NATS_MAX_PINGS_OUTSTANDING + 1) = %s, want <= 15s", d)
	}
}

func TestUnknownVariables(t *testing.T) {
	t.Parallel()
	got := Unknown([]string{
		"RELAY_INGEST_LISTENER=:1=a/line",      // a typo
		"RELAY_LOGLEVEL=debug",                 // another
		"RELAY_FOO=1",                          // nothing like it
		"RELAY_INGEST_PORT=1",                  // looks like a service link, but no RELAY_INGEST_SERVICE_HOST
		"RELAY_FANOUT_ADDR=:1",                 // known
		"RELAY_TOKEN=t", "RELAY_REQUIRE_E2E=1", // read by relay send/watch and by the tests
		"PATH=/bin", "NATS_URL=x", // not relay's
		// What Kubernetes injects for Services named relay and relay-fanout.
		"RELAY_SERVICE_HOST=10.0.0.1", "RELAY_SERVICE_PORT=8080", "RELAY_SERVICE_PORT_HTTP=8080",
		"RELAY_PORT=tcp://10.0.0.1:8080", "RELAY_PORT_8080_TCP=tcp://10.0.0.1:8080",
		"RELAY_PORT_8080_TCP_PROTO=tcp", "RELAY_PORT_8080_TCP_PORT=8080", "RELAY_PORT_8080_TCP_ADDR=10.0.0.1",
		"RELAY_FANOUT_SERVICE_HOST=10.0.0.2", "RELAY_FANOUT_PORT_80_TCP_ADDR=10.0.0.2",
	})
	want := []string{
		"RELAY_FOO is not a relay variable and is ignored (see 'relay config')",
		"RELAY_INGEST_LISTENER is not a relay variable and is ignored (did you mean RELAY_INGEST_LISTENERS?)",
		"RELAY_INGEST_PORT is not a relay variable and is ignored (see 'relay config')",
		"RELAY_LOGLEVEL is not a relay variable and is ignored (did you mean RELAY_LOG_LEVEL?)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Unknown =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestClashingAddresses: two addresses a role would bind on the same port of
// overlapping hosts are a configuration error, each pair named.
func TestClashingAddresses(t *testing.T) {
	base, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	set := func(listeners, ingestHTTP, fanout, nats string) func(*Config) {
		return func(c *Config) {
			c.Listeners, c.Ingest.HTTPAddr, c.Fanout.Addr, c.EmbeddedListen = MustParseListeners(listeners), ingestHTTP, fanout, nats
		}
	}
	tests := []struct {
		name   string
		role   Role
		mutate func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"defaults", RoleAll, set(":7070=a/line,:7071=*/line", ":8081", ":8080", ""), ""},
		{"wildcard and loopback listeners", RoleIngest, set(":7070=a/line,127.0.0.1:7070=b/line", "", ":8080", ""), "both listen on port 7070"},
		{"fanout on a listener's port", RoleAll, set(":7070=a/line", ":8081", "127.0.0.1:7070", ""), "RELAY_FANOUT_ADDR=127.0.0.1:7070"},
		{"ingest http on a listener's port", RoleIngest, set("0.0.0.0:7070=a/line", ":7070", ":8080", ""), "RELAY_INGEST_HTTP_ADDR=:7070"},
		{"localhost is loopback", RoleAll, set(":7070=a/line", "localhost:8080", "127.0.0.1:8080", ""), "port 8080"},
		{"ipv6 loopback and localhost", RoleAll, set(":7070=a/line", "[::1]:8081", "localhost:8081", ""), "port 8081"},
		{"embedded nats on the fanout port", RoleAll, set(":7070=a/line", "", ":4222", "127.0.0.1:4222"), "RELAY_NATS_LISTEN"},
		{"different loopback addresses", RoleAll, set("127.0.0.1:7070=a/line", "", "127.0.0.2:7070", ""), ""},
		{"ipv4 wildcard and ipv6 loopback", RoleAll, set("0.0.0.0:7070=a/line", "", "[::1]:7070", ""), ""},
		{"port 0 twice", RoleAll, set("127.0.0.1:0=a/line,127.0.0.1:0=*/line", "127.0.0.1:0", "127.0.0.1:0", ""), ""},
		{"fanout does not bind ingest's", RoleFanout, set(":7070=a/line", ":8080", ":8080", ""), ""},
		{"ingest does not bind fanout's", RoleIngest, set(":7070=a/line", ":8081", ":7070", ""), ""},
		{"nats listen only in all", RoleFanout, set(":7070=a/line", "", ":4222", ":4222"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			err := c.Validate(tt.role)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestControlSettingsValidated(t *testing.T) {
	t.Parallel()
	c := Control{ControlChannels: []string{"dev.>", "a..b"}, PresenceRefresh: time.Millisecond,
		FanoutControlRate: 0.5, FanoutControlMax: MaxControlMessage + 1, IngestControlQ: 0, IngestControlB: 10}
	err := c.Validate(RoleAll)
	for _, want := range []string{"RELAY_CONTROL_CHANNELS", "RELAY_PRESENCE_REFRESH", "RELAY_FANOUT_CONTROL_RATE",
		"RELAY_FANOUT_CONTROL_MAX_MESSAGE", "RELAY_INGEST_CONTROL_QUEUE", "RELAY_INGEST_CONTROL_QUEUE_BYTES"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	ok := Control{ControlChannels: []string{"dev.>"}, PresenceRefresh: 10 * time.Second, FanoutControlRate: 100,
		FanoutControlMax: 65536, IngestControlQ: 256, IngestControlB: 1 << 20}
	if err := ok.Validate(RoleAll); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
}
