package server

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// options is the server command's flag set as the sub-configs see it: each
// option is a flag whose environment variable, when set, gives its default,
// so that a flag wins over its variable. A sub-config registers its options
// with their typed defaults (register), and once the command line is parsed
// turns them into its fields and checks them (parse): each setting has its
// default, its check and its error message in one place.
type options struct {
	fs     *flag.FlagSet
	getenv func(string) string
	// env is each flag's variable, for the errors that name it.
	env map[string]string
	// envErrs are the variables that do not parse, by flag; each is an
	// error unless its flag overrides it.
	envErrs map[string]error
	// texts are the options a sub-config reads back once parsed (text).
	texts map[string]*string
	// set holds the flags given on the command line, once parsed.
	set map[string]bool
	// defs, when not nil, receives each option as it is registered (see
	// FlagTable).
	defs *[]flagDef
}

// flagDef is one flag, or one variable without a flag, as the
// configuration doc shows it (see FlagTable).
type flagDef struct {
	Name, Env, Default, Usage string
}

func newOptions(getenv func(string) string, fs *flag.FlagSet, defs *[]flagDef) *options {
	return &options{fs: fs, getenv: getenv, env: map[string]string{}, envErrs: map[string]error{}, texts: map[string]*string{}, defs: defs}
}

// lookup records the option, with its default as -h and the table write it
// (def), and returns its variable's value (empty when unset) and its usage
// naming the variable.
func (o *options) lookup(name, envName, def, usage string) (string, string) {
	o.env[name] = envName
	if o.defs != nil {
		*o.defs = append(*o.defs, flagDef{Name: name, Env: envName, Default: def, Usage: usage})
	}
	return o.getenv(envName), usage + " ($" + envName + ")"
}

// String registers a string option.
func (o *options) String(p *string, name, envName, def, usage string) {
	v, usage := o.lookup(name, envName, def, usage)
	if v == "" {
		v = def
	}
	o.fs.StringVar(p, name, v, usage)
}

// Text registers a string option that the sub-config reads back with text
// and turns into a field of its own type.
func (o *options) Text(name, envName, def, usage string) {
	p := new(string)
	o.texts[name] = p
	o.String(p, name, envName, def, usage)
}

// text is the value of the option Text (or SecretText) registered as name.
func (o *options) text(name string) string { return *o.texts[name] }

// Int registers a whole-number option.
func (o *options) Int(p *int, name, envName string, def int, usage string) {
	v, usage := o.lookup(name, envName, strconv.Itoa(def), usage)
	o.fs.IntVar(p, name, fromEnv(o, name, v, def, strconv.Atoi, "not a whole number"), usage)
}

// Duration registers a duration option. -h and the table write its
// default as the service's messages write durations ("15m", not
// time.Duration's "15m0s").
func (o *options) Duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
	v, usage := o.lookup(name, envName, order.FormatDuration(def), usage)
	d := fromEnv(o, name, v, def, time.ParseDuration, "not a duration (like 30s, 15m, 24h)")
	o.fs.DurationVar(p, name, d, usage)
	o.fs.Lookup(name).DefValue = order.FormatDuration(d)
}

// Bool registers an option that is off by default.
func (o *options) Bool(p *bool, name, envName, usage string) {
	v, usage := o.lookup(name, envName, "false", usage)
	o.fs.BoolVar(p, name, fromEnv(o, name, v, false, strconv.ParseBool, "not true or false"), usage)
}

// fromEnv is the default an option's variable gives, v, read by parse; def
// when v is empty. A value that does not parse is kept in envErrs, saying
// what it should be (want).
func fromEnv[T any](o *options, name, v string, def T, parse func(string) (T, error), want string) T {
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		o.envErrs[name] = fmt.Errorf("%s=%q: %s", o.env[name], v, want)
	}
	return x
}

// Secret reads a variable that has no flag, since the command line is
// visible to every user of the host.
func (o *options) Secret(p *string, envName, usage string) {
	if o.defs != nil {
		*o.defs = append(*o.defs, flagDef{Env: envName, Usage: usage})
	}
	*p = o.getenv(envName)
}

// SecretText registers a variable that has no flag, which the sub-config
// reads back with text(envName).
func (o *options) SecretText(envName, usage string) {
	p := new(string)
	o.texts[envName] = p
	o.Secret(p, envName, usage)
}

// parse parses the command line, after every option is registered.
func (o *options) parse(args []string) error {
	if err := o.fs.Parse(args); err != nil {
		return err
	}
	o.set = map[string]bool{}
	o.fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	var names []string
	for name := range o.envErrs {
		if !o.set[name] {
			names = append(names, name)
		}
	}
	if len(names) > 0 {
		sort.Strings(names)
		return o.envErrs[names[0]]
	}
	if o.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", o.fs.Arg(0))
	}
	return nil
}

// badOption is an error about the value of one option, which a sub-config's
// check returns. Its message starts with the flag; name renders it with the
// variable instead when that is where the value came from.
type badOption struct {
	flag string
	err  error
}

func (e *badOption) Error() string { return "-" + e.flag + ": " + e.err.Error() }
func (e *badOption) Unwrap() error { return e.err }

// optionErrorf returns a badOption of flag with the message format makes.
func optionErrorf(flag, format string, args ...any) error {
	return &badOption{flag: flag, err: fmt.Errorf(format, args...)}
}

// given says whether the option was set, by its flag or its variable.
func (o *options) given(name string) bool {
	return o.set[name] || o.getenv(o.env[name]) != ""
}

// name rewrites a badOption to name the variable rather than the flag when
// the value came from the variable, so that the error names what the user
// set; other errors pass unchanged.
func (o *options) name(err error) error {
	var bad *badOption
	if !errors.As(err, &bad) || o.set[bad.flag] || !o.given(bad.flag) {
		return err
	}
	return fmt.Errorf("%s: %w", o.env[bad.flag], bad.err)
}
