package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// declaredReasons reads reasons.go and returns, per reason type, the values
// of the constants declared with that type.
func declaredReasons(t *testing.T) map[string][]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "reasons.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string][]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			typ, ok := vs.Type.(*ast.Ident)
			if !ok {
				t.Fatalf("constant %s has no reason type", vs.Names[0])
			}
			for i := range vs.Names {
				v, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				if err != nil {
					t.Fatal(err)
				}
				values[typ.Name] = append(values[typ.Name], v)
			}
		}
	}
	return values
}

// TestReasonsAreListedExactly: every reason constant is in its list, and
// the counter's help text names exactly those values, no more, no fewer.
func TestReasonsAreListedExactly(t *testing.T) {
	t.Parallel()
	declared := declaredReasons(t)
	r := New()
	events := NATSEvents("ingest")
	r.MustRegister(events.Collector())
	// Count each listed reason once, so every series shows up in Gather.
	lists := map[string]struct {
		metric string
		label  string
		values []string
	}{
		"IngestRefusal":     {"relay_ingest_refused_total", "reason", strs(IngestRefusals(), r.Ingest.Refused)},
		"IngestUnpublished": {"relay_ingest_unpublished_total", "reason", strs(IngestUnpublishedReasons(), r.Ingest.Unpublished)},
		"FanoutRefusal":     {"relay_fanout_refused_total", "reason", strs(FanoutRefusals(), r.Fanout.Refused)},
		"FanoutDisconnect":  {"relay_fanout_disconnects_total", "reason", strs(FanoutDisconnects(), r.Fanout.Disconnects)},
		"SlowConsumerKind":  {"relay_fanout_slow_consumers_total", "kind", strs(SlowConsumerKinds(), r.Fanout.SlowConsumers)},
		"ReplaySource":      {"relay_fanout_replays_total", "source", strs(ReplaySources(), r.Fanout.Replays)},
		"NATSEvent":         {"relay_nats_events_total", "event", strs(NATSEventKinds(), events)},
		"AuthRefusal":       {"relay_auth_refused_total", "reason", strs(AuthRefusals(), r.Fanout.AuthRefused)},
		"ControlResult":     {"relay_ingest_control_messages_total", "result", strs(ControlResults(), r.Ingest.ControlMessages)},
	}
	if len(lists) != len(declared) {
		t.Errorf("reasons.go declares reason types %v; this test checks %d of them", keys(declared), len(lists))
	}
	mfs, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	paren := regexp.MustCompile(`\(([a-z_, ]+)\)\.$`)
	for typ, l := range lists {
		want := slices.Sorted(slices.Values(declared[typ]))
		if got := slices.Sorted(slices.Values(l.values)); !slices.Equal(got, want) {
			t.Errorf("%s list = %v, declared constants = %v", typ, got, want)
		}
		mf := byName[l.metric]
		if mf == nil {
			t.Errorf("%s not gathered", l.metric)
			continue
		}
		m := paren.FindStringSubmatch(mf.GetHelp())
		if m == nil {
			t.Errorf("%s help %q does not end with a (reason, ...) list", l.metric, mf.GetHelp())
			continue
		}
		if got := slices.Sorted(slices.Values(strings.Split(m[1], ", "))); !slices.Equal(got, want) {
			t.Errorf("%s help lists %v, declared constants are %v", l.metric, got, want)
		}
		var series []string
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				if lp.GetName() == l.label {
					series = append(series, lp.GetValue())
				}
			}
		}
		// A metric kept per tier (relay_auth_refused_total) has each reason once per tier.
		if got := slices.Compact(slices.Sorted(slices.Values(series))); !slices.Equal(got, want) {
			t.Errorf("%s{%s} series = %v, want %v", l.metric, l.label, got, want)
		}
	}
}

func strs[T ~string](vs []T, c *ReasonCounter[T]) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		c.Inc(v)
		out[i] = string(v)
	}
	return out
}

func keys(m map[string][]string) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

// TestTiersUseTypedReasons reads the rest of the module's Go code (tests
// excepted) and fails where a reason could escape the declared constants:
// a conversion to a reason type, a reason-typed constant declared outside
// this package with its own value, or a string literal (directly or through
// an untyped constant) given to a reason counter's Inc or With. Everything
// else a tier can pass is a typed value, which the compiler then checks.
func TestTiersUseTypedReasons(t *testing.T) {
	t.Parallel()
	declared := declaredReasons(t)
	reasonTypes := map[string]bool{}
	for typ := range declared {
		reasonTypes[typ] = true
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := filepath.Abs(".")
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || strings.HasPrefix(d.Name(), ".") || d.Name() == "deploy" || d.Name() == "tools" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		checked++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		isReasonType := func(e ast.Expr) bool {
			sel, ok := e.(*ast.SelectorExpr)
			if !ok {
				return false
			}
			pkg, ok := sel.X.(*ast.Ident)
			return ok && pkg.Name == "metrics" && reasonTypes[sel.Sel.Name]
		}
		// Untyped string constants of this file: passing one to Inc would
		// compile, so it counts as a literal.
		literalConsts := map[string]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, v := range vs.Values {
				if isReasonType(vs.Type) {
					t.Errorf("%s: %s declares a reason of its own; declare it in shared/metrics/reasons.go", pos(fset, rel, vs), vs.Names[i])
				}
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING && vs.Type == nil {
					literalConsts[vs.Names[i].Name] = true
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if isReasonType(call.Fun) {
				t.Errorf("%s: converts to %s; use a constant from shared/metrics/reasons.go", pos(fset, rel, call), types(call.Fun))
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Inc" && sel.Sel.Name != "With") || len(call.Args) != 1 {
				return true
			}
			switch a := call.Args[0].(type) {
			case *ast.BasicLit:
				if a.Kind == token.STRING {
					t.Errorf("%s: %s(%s): pass a typed reason from shared/metrics/reasons.go", pos(fset, rel, call), sel.Sel.Name, a.Value)
				}
			case *ast.Ident:
				if literalConsts[a.Name] {
					t.Errorf("%s: %s(%s): %s is an untyped string; use a typed reason", pos(fset, rel, call), sel.Sel.Name, a.Name, a.Name)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files under %s", checked, root)
	}
}

func pos(fset *token.FileSet, rel string, n ast.Node) string {
	return rel + ":" + strconv.Itoa(fset.Position(n.Pos()).Line)
}

func types(e ast.Expr) string {
	if sel, ok := e.(*ast.SelectorExpr); ok {
		if x, ok := sel.X.(*ast.Ident); ok {
			return x.Name + "." + sel.Sel.Name
		}
		return sel.Sel.Name
	}
	return ""
}
