package manifeststest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// configVar is one RELAY_* variable declared in shared/config/config.go.
type configVar struct {
	Name    string // RELAY_FANOUT_ADDR
	Group   string // lower-cased struct name: common, ingest, fanout
	Default string
}

// relayVars reads relay's variables from the envconfig tags in
// shared/config/config.go (parsed, not imported: this module stays free of
// relay's own dependencies), keyed by name.
func relayVars(t *testing.T) map[string]configVar {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, configSrc, nil, 0)
	if err != nil {
		t.Fatalf("parse %s: %v", configSrc, err)
	}
	prefix := "RELAY"
	vars := map[string]configVar{}
	ast.Inspect(f, func(n ast.Node) bool {
		// const Prefix = "RELAY"
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "Prefix" && len(vs.Values) == 1 {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok {
				if p, err := strconv.Unquote(lit.Value); err == nil {
					prefix = p
				}
			}
		}
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return true
		}
		for _, field := range st.Fields.List {
			if field.Tag == nil {
				continue
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				continue
			}
			tag := reflect.StructTag(raw)
			name, ok := tag.Lookup("envconfig")
			if !ok {
				continue
			}
			v := configVar{
				Name:    prefix + "_" + name,
				Group:   strings.ToLower(ts.Name.Name),
				Default: tag.Get("default"),
			}
			if v.Group == "durable" || v.Group == "auth" {
				v.Group = "common" // read by every role, listed under config.common
			}
			vars[v.Name] = v
		}
		return true
	})
	if len(vars) < 10 {
		t.Fatalf("found only %d RELAY_* variables in %s: has its format changed?", len(vars), configSrc)
	}
	return vars
}

// roleGroups: the config groups each relay role reads.
var roleGroups = map[string][]string{
	"ingest": {"common", "ingest"},
	"fanout": {"common", "fanout"},
}

// effective returns the value a relay container sees for name: its env, or
// relay's default.
func effective(vars map[string]configVar, env map[string]string, name string) (string, error) {
	if v, ok := env[name]; ok {
		return v, nil
	}
	cv, ok := vars[name]
	if !ok {
		return "", fmt.Errorf("%s is not declared in %s", name, configSrc)
	}
	return cv.Default, nil
}
