package config

import (
	"bytes"
	"os"
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
		"NATSURL": c.NATSURL, "SubjectPrefix": c.SubjectPrefix, "Listeners": c.Listeners,
		"IngestHTTP": c.Ingest.HTTPAddr, "MaxMessage": c.MaxMessage, "FanoutAddr": c.Fanout.Addr,
		"ClientQueue": c.ClientQueue, "LogLevel": c.LogLevel, "LogFormat": c.LogFormat,
	}
	want := map[string]any{
		"NATSURL": "nats://127.0.0.1:4222", "SubjectPrefix": "relay", "Listeners": ":7070=default/line,:7071=*/line",
		"IngestHTTP": ":8081", "MaxMessage": 65536, "FanoutAddr": ":8080",
		"ClientQueue": 1024, "LogLevel": "info", "LogFormat": "text",
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
	// The environment is restored after Load hid the bad values.
	if os.Getenv("RELAY_INGEST_MAX_MESSAGE") != "lots" {
		t.Fatal("Load did not restore the environment")
	}
	// The rest is still loaded, so Validate can report in the same run.
	if verr := c.Validate(RoleAll); verr == nil || !strings.Contains(verr.Error(), "RELAY_LOG_LEVEL") {
		t.Fatalf("Validate = %v", verr)
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
		{"bad listener framing", RoleIngest, func(c *Config) { c.Listeners = ":1=a/json" }, "framing"},
		{"bad listener channel", RoleIngest, func(c *Config) { c.Listeners = ":1=a b/line" }, "invalid channel"},
		{"listener ignored by fanout", RoleFanout, func(c *Config) { c.Listeners = "junk" }, ""},
		{"duplicate listener", RoleIngest, func(c *Config) { c.Listeners = ":1=a/line,:1=b/line" }, "used twice"},
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
	ls, err := ParseListeners(" :7070=default/line , 127.0.0.1:7071=*/len32,[::1]:7072=x.y/raw;public")
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		{Addr: ":7070", Channel: "default", Framing: FramingLine},
		{Addr: "127.0.0.1:7071", Channel: "*", Framing: FramingLen32},
		{Addr: "[::1]:7072", Channel: "x.y", Framing: FramingRaw, Public: true},
	}
	if len(ls) != len(want) {
		t.Fatalf("got %v", ls)
	}
	for i := range want {
		if ls[i] != want[i] {
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
	c.Listeners = ":7070=default/line,:7071=*/line,:7072=board/raw;public,:7073=x/len32"
	err := c.Validate(RoleIngest)
	if err == nil {
		t.Fatal("Validate accepted open fixed listeners under RELAY_AUTH=jwt")
	}
	for _, want := range []string{"fixed listener :7070=default/line carries no token", ":7070=default/line;public", "fixed listener :7073=x/len32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":7072") || strings.Contains(err.Error(), ":7071") {
		t.Errorf("error names a public or handshake listener:\n%v", err)
	}
	if err := c.Validate(RoleFanout); err != nil {
		t.Errorf("fanout role: %v", err)
	}
	c.Listeners = ":7071=*/line,:7072=board/raw;public"
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
