package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/orderexpiry/orderexpiry/internal/gen/openapi"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// route is one REST operation: its method, its path template with the
// JSON names of the fields it binds ({orderId}), and the RPC behind it.
type route struct{ Method, Path, RPC string }

func (r route) String() string { return r.Method + " " + r.Path + " → " + r.RPC }

// TestOpenAPIMatchesRoutes is the check that the OpenAPI document the server
// serves at /openapi.json describes exactly the REST routes of the protos'
// google.api.http rules (each to the same RPC), and that the server routes
// every one of them.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)

	code, h, doc := httpCall(t, s.HTTP, "GET", s.URL("/openapi.json"), "", "")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/openapi.json: %d %q", code, h.Get("Content-Type"))
	}
	if !bytes.Equal(doc, openapi.OrderService) {
		t.Fatal("/openapi.json is not the document generated from the protos (internal/gen/openapi)")
	}
	served := openAPIRoutes(t, doc)
	fromProto := protoRoutes(t, pb.File_orderexpiry_v1_order_service_proto)
	if len(fromProto) == 0 {
		t.Fatal("the protos have no google.api.http rule")
	}
	if diff := cmp.Diff(fromProto, served); diff != "" {
		t.Fatalf("REST routes of the protos (-) and of /openapi.json (+):\n%s", diff)
	}

	// The check below tells a route from a missing one: the gateway's own
	// answers for a path it does not know and a method it does not serve.
	for _, c := range []struct {
		method, path string
		status       int
	}{{"GET", "/v1/no-such-route", 404}, {"DELETE", "/v1/orders", 405}, {"PUT", "/v1/orders/x:complete", 405}} {
		if got, body := callRoute(t, s, c.method, c.path, ""); got != c.status || !isRoutingError(got, body) {
			t.Fatalf("%s %s: %d %s, want the gateway's %d", c.method, c.path, got, body, c.status)
		}
	}
	for i, r := range served {
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			path, body := r.Path, routeBodies[r.Method+" "+r.Path]
			if strings.Contains(path, "{groupId}") {
				// A group, so that every call on it succeeds.
				id := fmt.Sprint("openapi-g-", i)
				if code, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"`+id+`"}`); code != 200 {
					t.Fatalf("create group: %d %v", code, body)
				}
				path = strings.ReplaceAll(path, "{groupId}", id)
			}
			if strings.Contains(path, "{name}") {
				// An operation (AIP-151's operations/<id>), a dry run.
				code, body := s.restCall(t, "POST", "/v1/orders:bulkChange", `{"cancel":true,"dryRun":true}`)
				if code != 200 {
					t.Fatalf("bulk change: %d %v", code, body)
				}
				path = strings.ReplaceAll(path, "{name}", fmt.Sprint(body["name"]))
			}
			if strings.Contains(path, "{orderId}") {
				// A pending order, so that every call on it succeeds.
				id := fmt.Sprint("openapi-", i)
				if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"`+id+`","ttl":"60s"}`); code != 200 {
					t.Fatalf("checkout: %d %v", code, body)
				}
				path = strings.ReplaceAll(path, "{orderId}", id)
			} else if r.Method == "POST" && body == "" {
				body = fmt.Sprintf(`{"orderId":"openapi-new-%d"}`, i)
			}
			if strings.Contains(path, "{") {
				t.Fatalf("no value for the parameters of %s", path)
			}
			code, resp := callRoute(t, s, r.Method, path, body)
			if isRoutingError(code, resp) {
				t.Fatalf("%s %s is in /openapi.json but not routed: %d %s", r.Method, path, code, resp)
			}
			if code != 200 {
				t.Fatalf("%s %s: %d %s, want 200", r.Method, path, code, resp)
			}
		})
	}
}

// routeBodies are the bodies of the calls that need one to succeed.
var routeBodies = map[string]string{
	"POST /v1/orders/{orderId}:reschedule":  `{"ttl":"120s"}`,
	"POST /v1/orders:batchCheckout":         `{"requests":[{"orderId":"openapi-batch"}]}`,
	"POST /v1/orders:bulkChange":            `{"cancel":true,"dryRun":true}`,
	"POST /v1/{name}:cancel":                `{}`,
	"POST /v1/groups":                       `{"groupId":"openapi-new-group"}`,
	"POST /v1/groups/{groupId}:pull":        `{"wait":"0s"}`,
	"POST /v1/groups/{groupId}:acknowledge": `{"ackIds":["0/1-0/1"]}`,
	"POST /v1/groups/{groupId}:nack":        `{"ackIds":["0/1-0/1"]}`,
	"POST /v1/groups/{groupId}:redrive":     `{"all":true}`,
}

// openAPIRoutes returns the operations of a Swagger 2.0 document, sorted.
func openAPIRoutes(t *testing.T, doc []byte) []route {
	t.Helper()
	var d struct {
		Swagger string
		Paths   map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("/openapi.json: %v", err)
	}
	if d.Swagger != "2.0" {
		t.Fatalf("/openapi.json: swagger %q, want 2.0", d.Swagger)
	}
	methods := []string{"get", "put", "post", "delete", "options", "head", "patch"}
	var out []route
	for path, item := range d.Paths {
		for key, raw := range item {
			if !slices.Contains(methods, key) {
				continue // parameters, $ref, x-…
			}
			var op struct{ OperationID string }
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", key, path, err)
			}
			out = append(out, route{strings.ToUpper(key), path, op.OperationID})
		}
	}
	sortRoutes(out)
	return out
}

// protoRoutes returns the google.api.http rules (additional bindings
// included) of every method of the file's services, sorted, with each
// path variable ({order_id}) under the JSON name of its field ({orderId}),
// as protoc-gen-openapiv2 writes it, and the RPC as its operationId
// (Service_Method).
func protoRoutes(t *testing.T, fd protoreflect.FileDescriptor) []route {
	t.Helper()
	var out []route
	for i := range fd.Services().Len() {
		svc := fd.Services().Get(i)
		for j := range svc.Methods().Len() {
			m := svc.Methods().Get(j)
			rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			rpc := string(svc.Name()) + "_" + string(m.Name())
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				method, path := httpRule(t, r)
				out = append(out, route{method, jsonTemplate(t, m.Input(), path), rpc})
			}
		}
	}
	sortRoutes(out)
	return out
}

func httpRule(t *testing.T, r *annotations.HttpRule) (string, string) {
	t.Helper()
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "GET", p.Get
	case *annotations.HttpRule_Put:
		return "PUT", p.Put
	case *annotations.HttpRule_Post:
		return "POST", p.Post
	case *annotations.HttpRule_Delete:
		return "DELETE", p.Delete
	case *annotations.HttpRule_Patch:
		return "PATCH", p.Patch
	case *annotations.HttpRule_Custom:
		return strings.ToUpper(p.Custom.GetKind()), p.Custom.GetPath()
	}
	t.Fatalf("http rule %v has no pattern", r)
	return "", ""
}

var pathVariable = regexp.MustCompile(`\{([^}=]+)(=[^}]*)?\}`)

// jsonTemplate writes each variable of a path template under the JSON name
// of the field it binds: {order_id} → {orderId}, {a.b_c} → {a.bC}.
func jsonTemplate(t *testing.T, in protoreflect.MessageDescriptor, path string) string {
	t.Helper()
	return pathVariable.ReplaceAllStringFunc(path, func(v string) string {
		m := pathVariable.FindStringSubmatch(v)
		// A variable with a pattern of one collection, as AIP-151's
		// {name=operations/*}, is one parameter in OpenAPI: {name}.
		if m[2] != "" && !regexp.MustCompile(`^=[a-zA-Z]+/\*$`).MatchString(m[2]) {
			t.Fatalf("path %s: a variable with a pattern (%s) is not handled by this test", path, v)
		}
		msg := in
		var names []string
		for _, part := range strings.Split(m[1], ".") {
			if msg == nil {
				t.Fatalf("path %s: %s goes through a field that is not a message", path, m[1])
			}
			f := msg.Fields().ByName(protoreflect.Name(part))
			if f == nil {
				t.Fatalf("path %s: %s has no field %q", path, in.FullName(), m[1])
			}
			names = append(names, f.JSONName())
			msg = f.Message()
		}
		return "{" + strings.Join(names, ".") + "}"
	})
}

func sortRoutes(rs []route) {
	slices.SortFunc(rs, func(a, b route) int { return strings.Compare(a.Path+" "+a.Method, b.Path+" "+b.Method) })
}

// callRoute makes a call and returns its status and the start of its body
// (a watch is left after its headers).
func callRoute(t *testing.T, s *server, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := s.newRequest(ctx, method, path, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "application/x-ndjson" {
		return resp.StatusCode, nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, b
}

// isRoutingError says whether a response is the gateway's own for a path
// it has no route for, or a method it does not serve there.
func isRoutingError(code int, body []byte) bool {
	var e struct{ Message string }
	_ = json.Unmarshal(body, &e)
	switch code {
	case http.StatusNotFound:
		return strings.HasPrefix(e.Message, "no route for ")
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return true
	}
	return false
}
