// Package deploycheck reads the operator's files under deploy/ as the
// tools that use them do, for the tests that check them: the alerting rules
// through Prometheus's own rule parser, the Grafana dashboard's queries
// through the PromQL parser, and the metric names each expression reads,
// which internal/e2e compares with what a running server exports.
package deploycheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Query is one PromQL expression of a deploy file, and where it is.
type Query struct {
	Where string
	Expr  string
}

// promql is the parser Prometheus itself uses for rules, with its default
// options (no experimental functions).
var promql = parser.NewParser(parser.Options{})

// AlertRules parses the rules file at path as Prometheus does when it loads
// it (unknown fields are errors, every expression and template is checked)
// and returns each rule's expression.
func AlertRules(path string) ([]Query, error) {
	groups, err := Rules(path)
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			out = append(out, Query{Where: fmt.Sprintf("%s: group %s, rule %s", path, g.Name, name), Expr: r.Expr})
		}
	}
	return out, nil
}

// Rules parses the rules file at path as Prometheus does (see AlertRules)
// and returns its groups.
func Rules(path string) (*rulefmt.RuleGroups, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promql, log)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return groups, nil
}

// grafanaVars are the dashboard variables a query may use, and what
// stands for them when the query is parsed here: Grafana replaces them
// before sending the query to Prometheus.
var grafanaVars = map[string]string{
	"$__rate_interval": "5m",
	"$__interval":      "1m",
	"$__range":         "1h",
}

var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_]+\}?`)

// dashboard is the part of a Grafana dashboard's JSON the checks read.
type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	// A row's panels, when it is collapsed.
	Panels []panel `json:"panels"`
}

// DashboardQueries reads the Grafana dashboard at path and returns each
// panel's queries, the dashboard variables replaced (see grafanaVars); it
// fails on a query that uses any other variable, a panel with no query,
// and on JSON that is not a dashboard.
func DashboardQueries(path string) ([]Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		return nil, fmt.Errorf("%s: not a dashboard: it needs a title, a uid and panels", path)
	}
	var out []Query
	var errs []error
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if len(p.Panels) == 0 && len(p.Targets) == 0 {
				errs = append(errs, fmt.Errorf("%s: panel %q has no query", path, p.Title))
			}
			for _, t := range p.Targets {
				where := fmt.Sprintf("%s: panel %q, query %s", path, p.Title, t.RefID)
				expr := grafanaVar.ReplaceAllStringFunc(t.Expr, func(v string) string {
					if r, ok := grafanaVars[strings.NewReplacer("{", "", "}", "").Replace(v)]; ok {
						return r
					}
					errs = append(errs, fmt.Errorf("%s: unknown variable %s", where, v))
					return v
				})
				out = append(out, Query{Where: where, Expr: expr})
			}
		}
	}
	walk(d.Panels)
	return out, errors.Join(errs...)
}

// MetricNames parses expr and returns the metric names its selectors read,
// sorted; a selector without a name is an error, since what it reads
// cannot be checked.
func MetricNames(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name == "" {
			err = fmt.Errorf("selector %s has no metric name", vs)
			return err
		}
		if !slices.Contains(names, vs.Name) {
			names = append(names, vs.Name)
		}
		return nil
	})
	slices.Sort(names)
	return names, err
}
