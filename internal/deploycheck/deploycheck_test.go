package deploycheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/orderexpiry/orderexpiry/internal/image"
)

// root is the repository's top directory, where deploy/ and compose.yaml
// are.
const root = "../.."

// TestAlertRules: Prometheus's rule parser takes the rules file, every
// expression names the metrics it reads, every alert says how severe it is
// and what happened, and the alerts an operator must have are there. That
// each metric really exists is checked against a running server in
// internal/e2e (TestDeployQueriesUseExportedMetrics).
func TestAlertRules(t *testing.T) {
	path := filepath.Join(root, "deploy/prometheus/alerts.yaml")
	groups, err := Rules(path)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s needs a summary and a description", r.Alert)
			}
		}
	}
	queries, err := AlertRules(path)
	if err != nil {
		t.Fatal(err)
	}
	checkQueries(t, queries)
	for _, want := range []string{
		"OrderExpiryNotServing", "OrderExpiryLate", "OrderExpiryGroupBacklogGrowing", "OrderExpiryGroupUnackedTooOld",
		"OrderExpiryDeadLetters", "OrderExpiryPushFailing", "OrderExpiryRedisMemoryNearMax",
	} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s in %s", want, path)
		}
	}
}

// TestRulesParserRefuses: the parser the tests rely on does refuse a bad
// rules file, so that TestAlertRules can fail.
func TestRulesParserRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"bad expression": "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x[5m]\n",
		"unknown field":  "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        severity: critical\n",
		"bad template":   "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        annotations:\n          summary: \"{{ $value \"\n",
	} {
		path := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := AlertRules(path); err == nil {
			t.Errorf("%s: the rules file was taken", name)
		}
	}
}

// TestDashboard: the Grafana dashboard is JSON with a title, a uid and
// panels, every panel has a query, and every query parses as PromQL.
func TestDashboard(t *testing.T) {
	queries, err := DashboardQueries(filepath.Join(root, "deploy/grafana/dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) < 10 {
		t.Fatalf("%d queries in the dashboard", len(queries))
	}
	checkQueries(t, queries)
}

// checkQueries fails for a query that does not parse or names no metric.
func checkQueries(t *testing.T, queries []Query) {
	t.Helper()
	for _, q := range queries {
		names, err := MetricNames(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
		} else if len(names) == 0 {
			t.Errorf("%s: %q reads no metric", q.Where, q.Expr)
		}
	}
}

func TestMetricNames(t *testing.T) {
	got, err := MetricNames(`sum by (g) (rate(b_total{x!="y"}[5m])) / sum(rate(a_total[5m])) > 0.1 and on() vector(1)`)
	if err != nil || !slices.Equal(got, []string{"a_total", "b_total"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := MetricNames(`{job="x"}`); err == nil {
		t.Fatal("a selector with no name was taken")
	}
}

// kubernetesScheme knows the kinds the manifests may hold.
func kubernetesScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// decodeManifests decodes every document of the YAML files in dir strictly
// into the Kubernetes API's Go types: an unknown or misspelt field, a
// duplicate field, a value of the wrong type or an unknown kind is an
// error.
func decodeManifests(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	scheme := kubernetesScheme(t)
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var out []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			out = append(out, obj)
		}
	}
	return out
}

// TestKubernetesManifests: the manifests decode strictly into the
// Kubernetes API types (see decodeManifests), and hang together: the
// Deployment's selector matches its pods, its probes ask the health
// endpoints on a port the container declares, every container has resource
// requests, the metrics port is annotated for Prometheus, the Service and
// the PodDisruptionBudget select the Deployment's pods, and the Service's
// ports lead to the container's.
func TestKubernetesManifests(t *testing.T) {
	objs := decodeManifests(t, filepath.Join(root, "deploy/kubernetes"))
	var dep *appsv1.Deployment
	var svc *corev1.Service
	var pdb *policyv1.PodDisruptionBudget
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		default:
			t.Errorf("unexpected %T", o)
		}
	}
	if dep == nil || svc == nil || pdb == nil {
		t.Fatalf("want a Deployment, a Service and a PodDisruptionBudget; got %d objects", len(objs))
	}
	pods := labels.Set(dep.Spec.Template.Labels)
	selects := func(what string, sel map[string]string) {
		if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(pods) {
			t.Errorf("%s's selector %v does not select the Deployment's pods %v", what, sel, pods)
		}
	}
	selects("the Deployment", dep.Spec.Selector.MatchLabels)
	selects("the Service", svc.Spec.Selector)
	selects("the PodDisruptionBudget", pdb.Spec.Selector.MatchLabels)
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("the PodDisruptionBudget bounds nothing")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Error("a PodDisruptionBudget needs more than one replica")
	}

	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 9090 || ports["http"] != 8080 {
		t.Errorf("container ports %v, want grpc 9090 and http 8080 (the image's)", ports)
	}
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", what)
			return
		}
		if p.HTTPGet.Path != path || ports[p.HTTPGet.Port.String()] != 8080 {
			t.Errorf("%s probe asks %s on port %s, want %s on the http port", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	probe("readiness", c.ReadinessProbe, "/healthz")
	probe("liveness", c.LivenessProbe, "/livez")
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resource requests %v: want cpu and memory", c.Resources.Requests)
	}
	a := dep.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "8080" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want the metrics port annotated for Prometheus", a)
	}
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != image.UID {
		t.Errorf("pod security context %+v: want runAsNonRoot and the image's user %d", sc, image.UID)
	}
	for _, p := range svc.Spec.Ports {
		if ports[p.TargetPort.String()] == 0 {
			t.Errorf("Service port %s leads to %s, which the container does not declare", p.Name, p.TargetPort.String())
		}
	}
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || time.Duration(*grace)*time.Second <= 10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v: want more than the default -shutdown-timeout of 10s", grace)
	}
}

// TestKubernetesDecodeRefuses: the strict decoding refuses what
// kubeconform would, so that TestKubernetesManifests can fail.
func TestKubernetesDecodeRefuses(t *testing.T) {
	scheme := kubernetesScheme(t)
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	for name, doc := range map[string]string{
		"misspelt field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n",
		"wrong type":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: eighty}]}\n",
		"unknown kind":   "apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n",
		"old version":    "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n",
	} {
		if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestCompose: compose.yaml loads with the Compose specification's own
// loader (compose-go, which validates it against the specification's JSON
// schema), Redis keeps its data (appendonly yes, on a volume) and never
// evicts (noeviction), both services have health checks, and the service
// waits for a healthy Redis and runs the image `make image` builds.
func TestCompose(t *testing.T) {
	ctx := context.Background()
	details, err := loader.LoadConfigFiles(ctx, []string{filepath.Join(root, "compose.yaml")}, root)
	if err != nil {
		t.Fatal(err)
	}
	details.Environment = map[string]string{}
	p, err := loader.LoadWithContext(ctx, *details, func(o *loader.Options) { o.SetProjectName("orderexpiry", true) })
	if err != nil {
		t.Fatal(err)
	}
	redis, err := p.GetService("redis")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := p.GetService("orderexpiry")
	if err != nil {
		t.Fatal(err)
	}
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %s", cmd, want)
		}
	}
	if len(redis.Volumes) == 0 || redis.Volumes[0].Target != "/data" {
		t.Errorf("redis keeps no volume at /data: %+v", redis.Volumes)
	}
	for _, s := range []types.ServiceConfig{redis, svc} {
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Disable {
			t.Errorf("service %s has no health check", s.Name)
		}
	}
	if !slices.Equal(svc.HealthCheck.Test, image.Healthcheck.Test) {
		t.Errorf("orderexpiry's health check %q, want the image's %q", svc.HealthCheck.Test, image.Healthcheck.Test)
	}
	if dep, ok := svc.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("orderexpiry depends on %+v, want redis: service_healthy", svc.DependsOn)
	}
	if url := svc.Environment["REDIS_URL"]; !strings.HasPrefix(svc.Image, "orderexpiry:") || url == nil || !strings.HasPrefix(*url, "redis://redis:") {
		t.Errorf("orderexpiry: image %q, REDIS_URL %v; want the image make image builds, on the redis service", svc.Image, url)
	}
}

// TestComposeLoaderRefuses: the loader does validate, so that TestCompose
// can fail.
func TestComposeLoaderRefuses(t *testing.T) {
	ctx := context.Background()
	for name, body := range map[string]string{
		"unknown key":   "services:\n  a:\n    image: x\n    helthcheck: {test: [CMD, true]}\n",
		"wrong type":    "services:\n  a:\n    image: x\n    ports: 8080\n",
		"bad condition": "services:\n  a:\n    image: x\n    depends_on: {b: {condition: healthy}}\n  b:\n    image: y\n",
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "compose.yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		details, err := loader.LoadConfigFiles(ctx, []string{path}, dir)
		if err == nil {
			_, err = loader.LoadWithContext(ctx, *details, func(o *loader.Options) { o.SetProjectName("x", true) })
		}
		if err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// stripComments drops comment lines, so that a document of only comments
// counts as empty.
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
