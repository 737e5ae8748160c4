package main

import (
	"io/fs"
	"os"
	"path/filepath"
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
