package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureDocIsTheCitedOne: the code and docs cite
// docs/architecture.md, never a design file this repository does not have,
// and the architecture doc keeps the sections later features add to.
func TestArchitectureDocIsTheCitedOne(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{
		"## Tiers", "## Data path", "## Contracts", "### Ports", "### Ingest TCP", "### NATS",
		"### Fanout HTTP and WebSocket", "### Close codes and refusals", "### Configuration", "### Metrics",
		"## Code layout and the import rule", "## Where each concern lives", "## Authentication",
		"## Transport and network controls", "## Durable channels", "## Talking back", "## Fault guarantees",
	} {
		if !strings.Contains(string(doc), "\n"+h+"\n") {
			t.Errorf("docs/architecture.md lacks the heading %q", h)
		}
	}
	root := "../.."
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".yaml", ".yml", ".sh", ".tpl", ".txt", ".html", ".js", ".css":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "DESIGN"+".md") {
			t.Errorf("%s cites DESIGN"+".md, which is not in this repository; cite docs/architecture.md", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDocsAgreeWithTheCode: README's Go version is go.mod's, and every idle
// connection figure in the docs is the one measured in docs/benchmarks.md's
// results table.
func TestDocsAgreeWithTheCode(t *testing.T) {
	t.Parallel()
	read := func(path string) string {
		b, err := os.ReadFile("../../" + path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(read("go.mod"))
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	readme := read("README.md")
	if want := "Requires Go " + goLine[1] + " or later"; !strings.Contains(readme, want) {
		t.Errorf("README.md does not say %q (go.mod: go %s)", want, goLine[1])
	}
	if m := regexp.MustCompile(`Go (1\.\d+(\.\d+)?)\+`).FindString(readme); m != "" {
		t.Errorf("README.md says %q; go.mod says go %s", m, goLine[1])
	}

	measured := regexp.MustCompile(`(?m)^\| memory: [^|]*idle[^|]*\|[^|]*\| \*\*([\d.]+ KiB)\*\* per connection`).FindStringSubmatch(read("docs/benchmarks.md"))
	if measured == nil {
		t.Fatal("docs/benchmarks.md's results table has no idle-memory row")
	}
	figure := regexp.MustCompile(`(?i)idle (?:WebSocket|connection)s? costs?(?: about)? ([\d.]+ KiB)`)
	found := 0
	for _, f := range []string{"README.md", "fanout/README.md", "ingest/README.md", "deploy/README.md", "docs/architecture.md"} {
		for _, m := range figure.FindAllStringSubmatch(read(f), -1) {
			found++
			if m[1] != measured[1] {
				t.Errorf("%s: %q, but docs/benchmarks.md measured %s", f, m[0], measured[1])
			}
		}
	}
	if found < 2 {
		t.Errorf("found %d idle-connection figures in the docs; the test's pattern may be stale", found)
	}
}

// TestREADMEMetricsTableMatchesRelayAll: the relay_ metrics a running
// 'relay all' serves are exactly the rows of README's metrics table (which
// shared/metrics generates without running relay).
func TestREADMEMetricsTableMatchesRelayAll(t *testing.T) {
	t.Parallel()
	fixed, httpAddr, ingestHTTP := freePort(t), freePort(t), freePort(t)
	startRelay(t, []string{
		"RELAY_INGEST_LISTENERS=" + fixed + "=default/line",
		"RELAY_FANOUT_ADDR=" + httpAddr,
		"RELAY_INGEST_HTTP_ADDR=" + ingestHTTP,
	}, "all")
	waitReady(t, "http://"+httpAddr+"/readyz")
	served := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (relay_\S+) `).FindAllStringSubmatch(metricsText(t, "http://"+httpAddr+"/metrics"), -1) {
		served[m[1]] = true
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(relay_[a-z_]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		table[m[1]] = true
	}
	for name := range served {
		if !table[name] {
			t.Errorf("relay all serves %s, which README's metrics table lacks", name)
		}
	}
	for name := range table {
		if !served[name] {
			t.Errorf("README's metrics table lists %s, which relay all does not serve", name)
		}
	}
}
