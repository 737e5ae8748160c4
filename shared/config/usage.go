package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
)

// Var describes one environment variable.
type Var struct {
	Name    string // RELAY_...
	Default string
	Desc    string
	Roles   string // which subcommands read it
	Value   string // current value, as loaded
}

// Vars lists every variable relay reads, in declaration order, with the
// values held by c.
func (c Config) Vars() []Var {
	var out []Var
	add := func(v any, roles string) {
		rv := reflect.ValueOf(v)
		rt := rv.Type()
		for i := range rt.NumField() {
			f := rt.Field(i)
			out = append(out, Var{
				Name:    Prefix + "_" + f.Tag.Get("envconfig"),
				Default: f.Tag.Get("default"),
				Desc:    f.Tag.Get("desc"),
				Roles:   roles,
				Value:   format(rv.Field(i).Interface()),
			})
		}
	}
	add(c.Common, "all, ingest, fanout")
	add(c.Ingest, "all, ingest")
	add(c.Fanout, "all, fanout")
	add(c.Durable, "all, ingest, fanout")
	return out
}

func format(v any) string {
	if s, ok := v.([]string); ok {
		return strings.Join(s, ",")
	}
	return fmt.Sprint(v)
}

// PrintUsage writes every variable with its current value, default and meaning.
func (c Config) PrintUsage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tVALUE\tDEFAULT\tROLES\tMEANING")
	for _, v := range c.Vars() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, orDash(v.Value), orDash(v.Default), v.Roles, v.Desc)
	}
	return tw.Flush()
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
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, def, v.Roles, strings.ReplaceAll(v.Desc, "|", "\\|"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
