package manifeststest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDockerfilesAgree: deploy/Dockerfile (from source) and
// deploy/Dockerfile.prebuilt (host binary, no registry) are two files
// because Docker's legacy builder builds every stage before the target; the
// image they produce must still be the same. Everything after the "shared"
// marker must match, and that part must keep the image non-root, probed
// without a shell, and free of BuildKit-only syntax.
func TestDockerfilesAgree(t *testing.T) {
	t.Parallel()
	shared := func(name string) []string {
		data, err := os.ReadFile(filepath.Join("..", name))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		if regexp.MustCompile(`(?m)^\s*(RUN\s+--mount|#\s*syntax\s*=)`).MatchString(s) {
			t.Errorf("%s uses BuildKit-only syntax; the legacy builder must build it", name)
		}
		_, after, ok := strings.Cut(s, "# --- shared with ")
		if !ok {
			t.Fatalf("%s: no shared-part marker", name)
		}
		lines := strings.Split(after, "\n")[1:] // drop the marker line
		return slices.DeleteFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "" })
	}
	src, pre := shared("Dockerfile"), shared("Dockerfile.prebuilt")
	if !slices.Equal(src, pre) {
		t.Errorf("the shared parts differ:\nDockerfile:\n%s\n\nDockerfile.prebuilt:\n%s", strings.Join(src, "\n"), strings.Join(pre, "\n"))
	}
	text := strings.Join(src, "\n")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^USER [1-9][0-9]*:[1-9][0-9]*$`),
		regexp.MustCompile(`(?m)^\s*CMD \["/relay", "health", "http://127\.0\.0\.1:8080/healthz"\]$`),
		regexp.MustCompile(`(?m)^ENTRYPOINT \["/relay"\]$`),
		regexp.MustCompile(`org\.opencontainers\.image\.source=`),
		regexp.MustCompile(`org\.opencontainers\.image\.revision=`),
	} {
		if !want.MatchString(text) {
			t.Errorf("shared part lacks %s", want)
		}
	}
	for _, name := range []string{"Dockerfile", "Dockerfile.prebuilt"} {
		data, _ := os.ReadFile(filepath.Join("..", name))
		froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(string(data), -1)
		if len(froms) == 0 || froms[len(froms)-1][1] != "scratch" {
			t.Errorf("%s: the final stage must be FROM scratch", name)
		}
	}
}
