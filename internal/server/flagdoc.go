package server

import (
	"fmt"
	"io"
	"strings"
)

// FlagTable returns the Markdown table of every flag and environment
// variable, in the order the sub-configs register them, with their
// defaults and usage: the table of docs/configuration.md, which a test
// keeps in step (TestConfigurationDoc).
func FlagTable() string {
	var defs []flagDef
	// -h stops the parse once every flag is defined; no variable is set,
	// so the defaults are the sub-configs' own.
	_, _ = parseFlags([]string{"-h"}, func(string) string { return "" }, io.Discard, &defs)
	code := func(s string) string {
		if s == "" {
			return ""
		}
		return "`" + s + "`"
	}
	text := strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")
	var b strings.Builder
	b.WriteString("| flag | variable | default | meaning |\n|---|---|---|---|\n")
	for _, d := range defs {
		name := ""
		if d.Name != "" {
			name = code("-" + d.Name)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, code(d.Env), code(d.Default), text.Replace(d.Usage))
	}
	return b.String()
}
