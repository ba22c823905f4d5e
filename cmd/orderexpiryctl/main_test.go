package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runArgs runs the command line args against an address where nothing
// listens: the commands here must fail before they dial.
func runArgs(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"ORDEREXPIRY_ADDR": "127.0.0.1:1", "ORDEREXPIRY_INSECURE": "true"}
	// Bounded, so that a command that does dial (a watch retries for
	// ever) fails the test rather than hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code = run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), code
}

// TestCommandLineRefused: a value the command line cannot send as given is
// refused with exit status 2 and a message naming the flag, before any call,
// rather than sent as something else or left out.
func TestCommandLineRefused(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		// flag's int is wider than the requests' int32: 4294967297 would
		// wrap round to 1.
		{[]string{"groups", "create", "g", "-max-deliveries", "4294967297"}, "-max-deliveries 4294967297 is out of range"},
		{[]string{"groups", "create", "g", "-push-url", "http://h/x", "-push-max-concurrency", "-4294967295"}, "-push-max-concurrency -4294967295 is out of range"},
		{[]string{"groups", "dead-letters", "g", "-page-size", "4294967396"}, "-page-size 4294967396 is out of range"},
		// A push setting without -push-url would make a pull group.
		{[]string{"groups", "create", "g", "-push-timeout", "5s"}, "go with -push-url"},
		{[]string{"groups", "create", "g", "-push-secret-file", "whsec.txt"}, "go with -push-url"},
		{[]string{"groups", "create", "g", "-push-max-concurrency", "3"}, "go with -push-url"},
		// A bound of zero ends every call before it starts.
		{[]string{"stats", "-timeout", "0s"}, "-timeout 0s: give more than zero"},
		{[]string{"-timeout", "-1s", "orders", "get", "o"}, "-timeout -1s: give more than zero"},
		// Settings the client cannot use, as -push-secret-file.
		{[]string{"stats", "-insecure=false", "-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{[]string{"watch", "-insecure=false", "-ca", "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{[]string{"orders", "get", "o", "-token", "Bearer t"}, "white space"},
		// A negative -limit would watch for ever.
		{[]string{"watch", "-limit", "-3"}, "-limit -3: give 0"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runArgs(t, tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.mention) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d saying %q", code, out, errOut, exitUsage, tc.mention)
			}
			if strings.Contains(errOut, "UNAVAILABLE") {
				t.Errorf("it dialed the service: %s", errOut)
			}
		})
	}
}

// TestExitStatusHelp: the exit statuses --help and docs/cli.md list name
// every code of the service that exitCode maps to each, so that a script
// written from them tests what the tool does.
func TestExitStatusHelp(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	for c := codes.OK + 1; c <= codes.Unauthenticated; c++ {
		n := exitCode(status.Error(c, "x"))
		if n == exitError {
			continue
		}
		name := code.Code(c).String()
		help := lineWith(exitHelp, fmt.Sprintf("  %d  ", n))
		row := lineWith(string(doc), fmt.Sprintf("| %d |", n))
		if !strings.Contains(help, name) {
			t.Errorf("%s exits %d, and --help says %q", name, n, help)
		}
		if !strings.Contains(row, "`"+name+"`") {
			t.Errorf("%s exits %d, and docs/cli.md says %q", name, n, row)
		}
	}
}

// lineWith is the first line of text that starts with prefix.
func lineWith(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
