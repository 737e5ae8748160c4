package config

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// Var describes one environment variable.
type Var struct {
	Name    string // RELAY_...
	Default string
	Desc    string
	Roles   []Role // the subcommands that read it
	Value   string // current value, as loaded
}

// UsedBy reports whether role reads v.
func (v Var) UsedBy(role Role) bool { return slices.Contains(v.Roles, role) }

// Vars lists every variable relay reads, in declaration order, with the
// values held by c. A variable is read by the roles of its struct (Common:
// every role), unless its `roles` tag (comma-separated) narrows them.
func (c Config) Vars() []Var {
	var out []Var
	add := func(v any, roles ...Role) {
		rv := reflect.ValueOf(v)
		rt := rv.Type()
		for i := range rt.NumField() {
			f := rt.Field(i)
			name, ok := f.Tag.Lookup("envconfig")
			if !ok {
				continue
			}
			r := roles
			if tag, ok := f.Tag.Lookup("roles"); ok {
				r = nil
				for s := range strings.SplitSeq(tag, ",") {
					r = append(r, Role(strings.TrimSpace(s)))
				}
			}
			out = append(out, Var{
				Name:    Prefix + "_" + name,
				Default: f.Tag.Get("default"),
				Desc:    f.Tag.Get("desc"),
				Roles:   r,
				Value:   format(rv.Field(i).Interface()),
			})
		}
	}
	add(c.Common, RoleAll, RoleIngest, RoleFanout)
	add(c.Ingest, RoleAll, RoleIngest)
	add(c.Fanout, RoleAll, RoleFanout)
	add(c.Durable, RoleAll, RoleIngest, RoleFanout)
	add(c.Auth, RoleAll, RoleIngest, RoleFanout)
	return out
}

// RoleVars is Vars narrowed to the variables role reads.
func (c Config) RoleVars(role Role) []Var {
	var out []Var
	for _, v := range c.Vars() {
		if v.UsedBy(role) {
			out = append(out, v)
		}
	}
	return out
}

func format(v any) string {
	if s, ok := v.([]string); ok {
		return strings.Join(s, ",")
	}
	return fmt.Sprint(v)
}

// TerminalWidth is the width WriteVars wraps to: a common terminal's.
const TerminalWidth = 100

// WriteVars writes each variable on a line of its own followed by its
// meaning, indented and wrapped to width columns. With values, the line shows
// the variable's current value, and its default when the two differ;
// without, its default.
func WriteVars(w io.Writer, vars []Var, width int, values bool) error {
	var b strings.Builder
	for _, v := range vars {
		b.WriteString(v.Name)
		switch {
		case !values:
			b.WriteString("=" + v.Default)
		case v.Value == v.Default:
			b.WriteString("=" + v.Value + "  (default)")
		default:
			b.WriteString("=" + v.Value + "  (default: " + orEmpty(v.Default) + ")")
		}
		b.WriteByte('\n')
		wrap(&b, v.Desc, "    ", width)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// wrap writes text in lines of at most width columns (a longer word gets a
// line of its own), each starting with indent.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, word := range strings.Fields(text) {
		if line != indent && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	b.WriteString(line + "\n")
}

// Markdown writes the README's configuration table.
func Markdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| variable | default | used by | meaning |\n|---|---|---|---|\n")
	for _, v := range (Config{}).Vars() {
		def := "(empty)"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		roles := make([]string, len(v.Roles))
		for i, r := range v.Roles {
			roles[i] = string(r)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, def, strings.Join(roles, ", "), strings.ReplaceAll(v.Desc, "|", "\\|"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orEmpty(s string) string {
	if s == "" {
		return "empty"
	}
	return s
}
