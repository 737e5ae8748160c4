package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// serviceLink matches what follows a Service's prefix in the variables
// Kubernetes injects into a pod for each Service in its namespace (unless
// enableServiceLinks is false): for a Service named relay, RELAY_SERVICE_HOST,
// RELAY_SERVICE_PORT[_NAME], RELAY_PORT and RELAY_PORT_8080_TCP[_PROTO|_PORT|_ADDR];
// for relay-ingest the same with RELAY_INGEST.
var serviceLink = regexp.MustCompile(`^_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?|PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)$`)

// notServer lists RELAY_* variables that are read by something other than
// the servers, so a server seeing them in its environment must not warn:
// the token of `relay send` and `relay watch`, and the test suite's switches.
var notServer = []string{"RELAY_TOKEN", "RELAY_REQUIRE_E2E", "RELAY_UPDATE_SCREENSHOT"}

// Unknown returns a warning for each RELAY_* variable in environ (as from
// os.Environ) that relay does not read, naming the closest one it does read.
// The variables Kubernetes injects for a Service whose name starts with
// relay are not reported: they come with a <SERVICE>_SERVICE_HOST, which
// tells them apart from a mistyped relay variable.
func Unknown(environ []string) []string {
	var known []string
	for _, v := range (Config{}).Vars() {
		known = append(known, v.Name)
	}
	set := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		set[name] = true
	}
	var services []string // RELAY, RELAY_INGEST, ...: Services whose links are present
	for name := range set {
		if svc, ok := strings.CutSuffix(name, "_SERVICE_HOST"); ok && (svc == Prefix || strings.HasPrefix(svc, Prefix+"_")) {
			services = append(services, svc)
		}
	}
	isLink := func(name string) bool {
		return slices.ContainsFunc(services, func(svc string) bool {
			rest, ok := strings.CutPrefix(name, svc)
			return ok && serviceLink.MatchString(rest)
		})
	}
	var out []string
	for name := range set {
		if !strings.HasPrefix(name, Prefix+"_") || slices.Contains(known, name) || slices.Contains(notServer, name) || isLink(name) {
			continue
		}
		msg := fmt.Sprintf("%s is not a relay variable and is ignored", name)
		if best := closest(name, known); best != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", best)
		} else {
			msg += " (see 'relay config')"
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// closest returns the name in names nearest to s by edit distance, if it is
// near enough to be a likely typo (at most a third of s's length apart).
func closest(s string, names []string) string {
	best, bestD := "", len(s)/3+1
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
