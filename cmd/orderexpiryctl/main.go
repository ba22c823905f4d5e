// Command orderexpiryctl is the operator's command line for an orderexpiry
// service, over its gRPC port with the Go client (package client): orders
// (get, checkout, complete, cancel, reschedule), a watch of the
// expirations that resumes after its last cursor, consumer groups and
// their dead letters, and the service's statistics. It prints tables for
// people and, with -o json, JSON for scripts; its exit status tells the
// outcome (see exitUsage and the others below, and docs/cli.md).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/client"
)

// The exit statuses, for scripts to test.
const (
	exitOK          = 0 // done
	exitError       = 1 // any other error
	exitUsage       = 2 // a bad command line, or a value the service refused as invalid (INVALID_ARGUMENT)
	exitNotFound    = 3 // no such order or group (NOT_FOUND)
	exitConflict    = 4 // the order or group is not in a state for this (FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS)
	exitUnavailable = 5 // the service cannot be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED)
	exitAuth        = 6 // the token is missing or refused (UNAUTHENTICATED, PERMISSION_DENIED)
)

const exitHelp = `Exit status:
  0  done
  1  any other error
  2  a bad command line, or a value the service refused (INVALID_ARGUMENT)
  3  no such order or group (NOT_FOUND)
  4  the order or group is not in a state for this (FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS)
  5  the service cannot be reached, or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED)
  6  the token is missing or refused (UNAUTHENTICATED, PERMISSION_DENIED)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// app holds the settings every command shares, and where it writes.
type app struct {
	addr, token, ca string
	insecure        bool
	output          string
	timeout         time.Duration
	stdout, stderr  io.Writer
	// path is the running command, "orderexpiryctl orders get", for its
	// usage errors.
	path string
}

// command is a command of the tree: a group of subcommands, or a leaf
// whose setup registers its flags and returns what it runs.
type command struct {
	name    string
	args    string // the arguments after the name, for the usage line
	summary string
	help    string // more text, with examples
	setup   func(fs *flag.FlagSet) action
	subs    []*command
}

// action runs a leaf command with its positional arguments.
type action func(ctx context.Context, a *app, args []string) error

// usageError is a command line the tool cannot run; it exits 2 and points
// at the command's help.
type usageError struct {
	path string // the command, "orderexpiryctl orders get"
	msg  string
}

func (u usageError) Error() string { return u.msg }

func usagef(path, format string, args ...any) error {
	return usageError{path: path, msg: fmt.Sprintf(format, args...)}
}

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	a := &app{
		addr:    getenv("ORDEREXPIRY_ADDR"),
		token:   getenv("ORDEREXPIRY_TOKEN"),
		ca:      getenv("ORDEREXPIRY_CA"),
		output:  "table",
		timeout: 10 * time.Second,
		stdout:  stdout,
		stderr:  stderr,
	}
	if a.addr == "" {
		a.addr = "localhost:9090"
	}
	if v := getenv("ORDEREXPIRY_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fmt.Fprintf(stderr, "orderexpiryctl: ORDEREXPIRY_INSECURE=%q is not true or false\n", v)
			return exitUsage
		}
		a.insecure = b
	}
	err := a.dispatch(ctx, root(), "orderexpiryctl", args)
	if err == nil {
		return exitOK
	}
	var help helpShown
	if errors.As(err, &help) {
		return exitOK
	}
	fmt.Fprintln(stderr, "orderexpiryctl:", describe(err))
	var u usageError
	if errors.As(err, &u) && u.path != "" {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", u.path)
	}
	return exitCode(err)
}

// describe is the line that tells an error: for a status of the service,
// its code by name and its message.
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return code.Code(st.Code()).String() + ": " + st.Message()
	}
	return err.Error()
}

// exitCode is the exit status for an error.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	if _, ok := status.FromError(err); !ok {
		return exitError
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return exitUsage
	case codes.NotFound:
		return exitNotFound
	case codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists:
		return exitConflict
	case codes.Unavailable, codes.DeadlineExceeded:
		return exitUnavailable
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitAuth
	}
	return exitError
}

// helpShown ends a run that printed help: exit 0.
type helpShown struct{}

func (helpShown) Error() string { return "help shown" }

// globalFlags registers the flags every command takes, their defaults the
// settings so far (from the environment, or given before the command).
func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.addr, "addr", a.addr, "the service's gRPC address (env ORDEREXPIRY_ADDR)")
	fs.StringVar(&a.token, "token", a.token, "bearer token (env ORDEREXPIRY_TOKEN)")
	fs.BoolVar(&a.insecure, "insecure", a.insecure, "dial without TLS, as make run serves (env ORDEREXPIRY_INSECURE=true)")
	fs.StringVar(&a.ca, "ca", a.ca, "PEM file of the CA that signed the service's certificate; empty: the system's (env ORDEREXPIRY_CA)")
	fs.StringVar(&a.output, "o", a.output, "output: table, or json")
	fs.DurationVar(&a.timeout, "timeout", a.timeout, "bound of each call (a watch has none)")
}

// dispatch finds the command of args under cmd and runs it.
func (a *app) dispatch(ctx context.Context, cmd *command, path string, args []string) error {
	if cmd.setup != nil {
		return a.runLeaf(ctx, cmd, path, args)
	}
	// The flags before a subcommand's name are the global ones.
	fs := newFlagSet(path)
	a.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.groupHelp(a.stdout, cmd, path)
			return helpShown{}
		}
		return usagef(path, "%s%v", where(path), err)
	}
	args = fs.Args()
	if len(args) == 0 {
		a.groupHelp(a.stderr, cmd, path)
		return usagef("", "%sgive a command", where(path))
	}
	if args[0] == "help" {
		a.groupHelp(a.stdout, cmd, path)
		return helpShown{}
	}
	for _, sub := range cmd.subs {
		if sub.name == args[0] {
			return a.dispatch(ctx, sub, path+" "+sub.name, args[1:])
		}
	}
	return usagef(path, "%sunknown command %q", where(path), args[0])
}

// runLeaf parses a leaf command's flags, wherever they are among its
// arguments, and runs it.
func (a *app) runLeaf(ctx context.Context, cmd *command, path string, args []string) error {
	own := newFlagSet(path)
	act := cmd.setup(own)
	fs := newFlagSet(path)
	a.globalFlags(fs)
	own.VisitAll(func(f *flag.Flag) { fs.Var(f.Value, f.Name, f.Usage) })
	var positional []string
	// "--" ends the flags: an order id may start with "-".
	var rest []string
	for i, arg := range args {
		if arg == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				a.leafHelp(cmd, path, own)
				return helpShown{}
			}
			return usagef(path, "%s%v", where(path), err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	positional = append(positional, rest...)
	a.path = path
	if a.output != "table" && a.output != "json" {
		return usagef(path, "-o %q: give table or json", a.output)
	}
	if a.timeout <= 0 {
		// Every call would end before it started, DEADLINE_EXCEEDED.
		return usagef(path, "-timeout %s: give more than zero", a.timeout)
	}
	return act(ctx, a, positional)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// groupHelp prints the help of a command that has subcommands.
func (a *app) groupHelp(w io.Writer, cmd *command, path string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s COMMAND [flags]\n\n", path)
	if cmd.help != "" {
		b.WriteString(cmd.help + "\n\n")
	}
	b.WriteString("Commands:\n")
	for _, sub := range cmd.subs {
		fmt.Fprintf(&b, "  %-14s %s\n", sub.name, sub.summary)
	}
	fmt.Fprintf(&b, "\nRun '%s COMMAND --help' for a command's flags and examples.\n", path)
	if path == "orderexpiryctl" {
		b.WriteString("\nGlobal flags (also after the command):\n")
		b.WriteString(a.flagDefaults(a.globalFlags))
		b.WriteString("\n" + exitHelp)
	}
	fmt.Fprint(w, b.String())
}

// leafHelp prints the help of a command that runs.
func (a *app) leafHelp(cmd *command, path string, own *flag.FlagSet) {
	var b strings.Builder
	usage := path
	if cmd.args != "" {
		usage += " " + cmd.args
	}
	fmt.Fprintf(&b, "Usage: %s [flags]\n\n%s\n", usage, cmd.summary)
	if cmd.help != "" {
		b.WriteString("\n" + cmd.help + "\n")
	}
	var flags bytes.Buffer
	own.SetOutput(&flags)
	own.PrintDefaults()
	if flags.Len() > 0 {
		b.WriteString("\nFlags:\n" + flags.String())
	}
	b.WriteString("\nGlobal flags: -addr, -token, -insecure, -ca, -o json, -timeout (see 'orderexpiryctl --help').\n")
	fmt.Fprint(a.stdout, b.String())
}

// flagDefaults is the flags' help as the flag package prints it.
func (a *app) flagDefaults(register func(*flag.FlagSet)) string {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	register(fs)
	var b bytes.Buffer
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// options are the client's options from the global settings.
func (a *app) options() client.Options {
	return client.Options{Token: a.token, Insecure: a.insecure, CAFile: a.ca}
}

// dial opens a client with opts. It does not connect yet, so that its
// errors are settings that cannot be used (a CA file that cannot be read, a
// token with white space): a bad command line, as a missing
// -push-secret-file is.
func (a *app) dial(opts client.Options) (*client.Client, error) {
	c, err := client.Dial(a.addr, opts)
	if err != nil {
		return nil, a.usagef("%v", err)
	}
	return c, nil
}

// call runs one call with the client, within the timeout.
func (a *app) call(ctx context.Context, f func(ctx context.Context, c *client.Client) error) error {
	c, err := a.dial(a.options())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return f(ctx, c)
}

// root is the command tree.
func root() *command {
	return &command{
		help: `orderexpiryctl drives an orderexpiry service over its gRPC port.

Examples:
  orderexpiryctl -insecure orders checkout ord-1 -ttl 15m -meta customer=c-7
  orderexpiryctl -insecure orders get ord-1 -o json
  orderexpiryctl -insecure watch -after 0-0
  orderexpiryctl -insecure groups list
  export ORDEREXPIRY_ADDR=orders.internal:9090 ORDEREXPIRY_TOKEN=s3cret
  orderexpiryctl stats`,
		subs: []*command{ordersCommand(), watchCommand(), groupsCommand(), statsCommand()},
	}
}

// exactly checks the number of positional arguments.
func (a *app) exactly(args []string, names ...string) error {
	if len(args) != len(names) {
		return a.usagef("want %s, got %d argument(s)", strings.Join(names, " "), len(args))
	}
	return nil
}

// int32Of is the value v of the int flag name for an int32 field of a
// request: a value past int32 is refused, where a conversion would wrap it
// round (4294967297 to 1) and send what nobody asked for.
func (a *app) int32Of(name string, v int) (int32, error) {
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, a.usagef("-%s %d is out of range", name, v)
	}
	return int32(v), nil
}

// usagef is a usage error of the running command.
func (a *app) usagef(format string, args ...any) error {
	return usagef(a.path, "%s%s", where(a.path), fmt.Sprintf(format, args...))
}

// where starts a usage error with the command it is about, "orders get: ",
// or nothing at the top.
func where(path string) string {
	if rel := strings.TrimPrefix(path, "orderexpiryctl "); rel != path {
		return rel + ": "
	}
	return ""
}
