// Package gateway is the REST/JSON face of the service: grpc-gateway
// translates HTTP calls into calls on the gRPC service, over a client
// connection (the server's is in process, see internal/inproc), and errors
// back into HTTP statuses.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Health reports whether the service can serve; nil means it can.
type Health func(ctx context.Context) error

// Options say what the HTTP port serves besides the REST API.
type Options struct {
	// Health backs GET /healthz: the error's message is the body's
	// reason, so it must be fit for any caller of /healthz.
	Health Health
	// HealthDetail are fields /healthz adds to its body, such as the
	// durability mode.
	HealthDetail map[string]string
	// Metrics is served at GET /metrics when not nil.
	Metrics http.Handler
	// OpenAPI is served at GET /openapi.json when not empty.
	OpenAPI []byte
	// Authorize checks the credentials of a request to /healthz, /metrics
	// or /openapi.json, unless Open names it; nil lets every request in.
	// (The API's own calls are checked by the gRPC server, to which the
	// gateway forwards the Authorization header.)
	Authorize func(*http.Request) error
	// Open names the endpoints that need no credentials: "health",
	// "metrics", "openapi".
	Open map[string]bool
	// MaxBodyBytes bounds a request body, and the request URI (its path
	// and query); 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// UI, when set, serves the dashboard under /ui/, to anyone: the page
	// holds no data, and the calls it makes for data are the API's, which
	// check the caller's credentials as any other call's.
	UI http.Handler
	// WatchWriteTimeout bounds each write of a watch's response (an event,
	// a heartbeat): a client that has not taken what was sent before for
	// that long has stopped reading, and its watch and connection are
	// closed. 0 means DefaultWatchWriteTimeout.
	WatchWriteTimeout time.Duration
	// CrossSite says which requests of web pages are taken.
	CrossSite CrossSite
}

// DefaultMaxBodyBytes is MaxBodyBytes when it is not set, and the server's
// default for gRPC messages too (-max-request-bytes).
const DefaultMaxBodyBytes = 64 << 10

// DefaultWatchWriteTimeout is WatchWriteTimeout when it is not set: long
// enough for a slow network to catch up, since a write waits only once the
// socket's buffers are full.
const DefaultWatchWriteTimeout = 10 * time.Second

// New returns the HTTP handler for the REST API over a connection to the
// gRPC service, with GET /healthz, /metrics and /openapi.json.
func New(ctx context.Context, conn grpc.ClientConnInterface, opts Options) (http.Handler, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.WatchWriteTimeout <= 0 {
		opts.WatchWriteTimeout = DefaultWatchWriteTimeout
	}
	mux, marshaler := newMux()
	client := pb.NewOrderServiceClient(conn)
	if err := pb.RegisterOrderServiceHandlerClient(ctx, mux, client); err != nil {
		return nil, err
	}
	// Registered after the generated handlers, so it takes their place.
	if err := mux.HandlePath(http.MethodGet, "/v1/expirations:watch", watchHandler(mux, client, opts.WatchWriteTimeout)); err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodGet, "/v1/groups/{group_id}/expirations:consume", consumeHandler(mux, client, opts.WatchWriteTimeout)); err != nil {
		return nil, err
	}
	guard := func(name string, h http.Handler) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			if opts.Authorize != nil && !opts.Open[name] {
				if err := opts.Authorize(r); err != nil {
					_, outbound := runtime.MarshalerForRequest(mux, r)
					runtime.HTTPError(r.Context(), mux, outbound, w, r, err)
					return
				}
			}
			h.ServeHTTP(w, r)
		}
	}
	// /livez says only that the process serves HTTP, whatever the store:
	// a liveness probe on /healthz would restart every replica while Redis
	// is away, which cures nothing.
	routes := map[string]http.Handler{"/healthz": healthHandler(opts.Health, opts.HealthDetail), "/livez": healthHandler(func(context.Context) error { return nil }, nil)}
	names := map[string]string{"/healthz": "health", "/livez": "health", "/metrics": "metrics", "/openapi.json": "openapi"}
	if opts.Metrics != nil {
		routes["/metrics"] = opts.Metrics
	}
	if len(opts.OpenAPI) > 0 {
		routes["/openapi.json"] = staticJSON(opts.OpenAPI)
	}
	for path, h := range routes {
		if err := mux.HandlePath(http.MethodGet, path, guard(names[path], h)); err != nil {
			return nil, err
		}
	}
	authorize := func(r *http.Request) error {
		if opts.Authorize == nil || opts.Open[names[r.URL.Path]] {
			return nil
		}
		return opts.Authorize(r)
	}
	api := jsonOnly(mux, http.MaxBytesHandler(strictListQuery(mux, limitURI(mux, opts.MaxBodyBytes, authorize, checkoutRoute(mux, marshaler, client, mux)), authorize), opts.MaxBodyBytes))
	if opts.UI == nil {
		return crossSite(mux, opts.CrossSite, api), nil
	}
	return crossSite(mux, opts.CrossSite, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, "/ui/") {
			opts.UI.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})), nil
}

// newMux is grpc-gateway's mux as the gateway sets it up, and the JSON
// marshaler it uses for every request and response, with no routes.
// checkoutRoute serves POST /v1/orders beside it, as its generated handler
// would: an option that changes what a call gets or answers (a header
// matcher, a middleware, a forward option) must be made there too, which
// TestCheckoutRouteMatchesMux checks for every request it tries.
func newMux() (*runtime.ServeMux, *jsonMarshaler) {
	marshaler := &jsonMarshaler{JSONPb: runtime.JSONPb{
		// Show every scalar field, so that "created": false is visible.
		MarshalOptions: protojson.MarshalOptions{EmitDefaultValues: true},
		// An unknown field is a mistake the caller should hear about.
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithErrorHandler(errorHandler),
		runtime.WithRoutingErrorHandler(routingErrorHandler),
		// Routes are matched on the path as sent, and then its parameters
		// unescaped: an escaped colon (%3A) is part of the segment it is in
		// (RFC 3986, section 2.2), never the separator of a custom verb.
		// The default would unescape first, so that POST
		// /v1/orders/ok-1%3Acomplete completed ok-1 while GET
		// /v1/orders/ok-1%3Acomplete looked for the id "ok-1:complete". (An
		// escaped slash, %2F, still separates segments in this mode.)
		runtime.WithUnescapingMode(runtime.UnescapingModeAllCharacters),
		// The service reads two headers of a REST call, which
		// AnnotateContext passes on whatever the matcher says: the
		// authorization and the caller's address (x-forwarded-for). The
		// default matcher would also copy a dozen standard headers into
		// "grpcgateway-" metadata on every call, for no reader.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
	)
	return mux, marshaler
}

// strictListQuery refuses the query parameters of GET /v1/orders that
// ListOrders does not have, once authorize has let the caller in; the
// generated handler would ignore them, and a misspelt "filtr" would list
// every order instead of the few asked for.
func strictListQuery(mux *runtime.ServeMux, next http.Handler, authorize func(*http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/orders" {
			if _, err := query(r, "filter", "order_by", "page_size", "page_token"); err != nil {
				refuseAuthorized(mux, w, r, authorize, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// limitURI refuses a request whose URI (path and query) is longer than
// limit with 414 URI Too Long, once authorize has let it in: the URI's
// parameters make the gRPC request, which the server would refuse for its
// size with RESOURCE_EXHAUSTED (429) before it even checked the caller's
// token.
func limitURI(mux *runtime.ServeMux, limit int64, authorize func(*http.Request) error, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if int64(len(r.RequestURI)) <= limit {
			next.ServeHTTP(w, r)
			return
		}
		refuseAuthorized(mux, w, r, authorize, &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestURITooLong,
			Err: status.Errorf(codes.InvalidArgument, "the request URI is %d bytes long; the limit is %d bytes", len(r.RequestURI), limit)})
	})
}

// refuseAuthorized answers err to a caller that authorize lets in, and
// authorize's error to one it does not: a caller without a valid token
// learns only that it needs one.
func refuseAuthorized(mux *runtime.ServeMux, w http.ResponseWriter, r *http.Request, authorize func(*http.Request) error, err error) {
	if aerr := authorize(r); aerr != nil {
		err = aerr
	}
	_, outbound := runtime.MarshalerForRequest(mux, r)
	runtime.HTTPError(r.Context(), mux, outbound, w, r, err)
}

func staticJSON(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// httpCodes overrides grpc-gateway's mapping where a more telling status
// exists: a state conflict is 409 (the gateway says 400), and a cursor past
// retention is 410 Gone, as a compacted watch is in Kubernetes.
var httpCodes = map[codes.Code]int{
	codes.FailedPrecondition: http.StatusConflict,
	codes.OutOfRange:         http.StatusGone,
}

// routingErrorHandler keeps the HTTP status of a routing error (the
// gateway's default turns 405 into 501). A path that names an order id the
// service refuses is refused for its id first, whatever the method: POST
// /v1/orders/ok-1%3Acomplete gets the same 400 as GET does.
func routingErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus == http.StatusNotFound || httpStatus == http.StatusMethodNotAllowed {
		if id, ok := pathOrderID(r); ok {
			if err := order.ValidateID("order_id", id); err != nil {
				errorHandler(ctx, mux, m, w, r, status.Error(codes.InvalidArgument, err.Error()))
				return
			}
		}
	}
	var err error
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		err = status.Errorf(codes.Unimplemented, "method %s is not allowed on %s", r.Method, r.URL.Path)
	case http.StatusNotFound:
		err = status.Errorf(codes.NotFound, "no route for %s %s", r.Method, r.URL.Path)
	default:
		err = status.Error(codes.InvalidArgument, http.StatusText(httpStatus))
	}
	errorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: err})
}

// pathOrderID returns the order id of a path /v1/orders/{order_id}, with or
// without a custom verb, as the routes read it: the one segment after
// /v1/orders/, up to a colon as sent (which starts the verb), unescaped.
func pathOrderID(r *http.Request) (string, bool) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/orders/")
	if !ok || strings.Contains(rest, "/") {
		return "", false
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	id, err := url.PathUnescape(rest)
	return id, err == nil
}

func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var routing *runtime.HTTPStatusError
	if !errors.As(err, &routing) {
		if code, ok := httpCodes[status.Code(err)]; ok {
			w = statusWriter{ResponseWriter: w, code: code}
		}
	}
	if status.Code(err) == codes.Unauthenticated {
		w = challengeWriter{w}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// statusWriter replaces the status code the gateway writes.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w statusWriter) WriteHeader(int) { w.ResponseWriter.WriteHeader(w.code) }

// challengeWriter sets the challenge of a 401 (the gateway would put the
// error message there).
type challengeWriter struct{ http.ResponseWriter }

func (w challengeWriter) WriteHeader(code int) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="orderexpiry"`)
	w.ResponseWriter.WriteHeader(code)
}

// healthHandler answers {"status":"SERVING"} or, with 503,
// {"status":"NOT_SERVING","reason":...}, with detail's fields besides.
func healthHandler(health Health, detail map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := map[string]string{"status": "SERVING"}
		for k, v := range detail {
			body[k] = v
		}
		code := http.StatusOK
		if err := health(r.Context()); err != nil {
			code = http.StatusServiceUnavailable
			body["status"], body["reason"] = "NOT_SERVING", err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		out, _ := json.Marshal(body) // a map of strings always marshals
		_, _ = w.Write(append(out, '\n'))
	})
}

// jsonMarshaler is the gateway's JSON marshaler, with decoding errors that
// say they are about the request body.
type jsonMarshaler struct{ runtime.JSONPb }

// The whole body is one JSON value: protojson refuses anything after it,
// which a streaming decoder would leave unread (and unchecked).
func (m *jsonMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		body, err := io.ReadAll(r)
		var tooLarge *http.MaxBytesError // from New's http.MaxBytesHandler
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("request body is larger than the limit of %d bytes", tooLarge.Limit)
		}
		if err != nil {
			return fmt.Errorf("request body: %w", err)
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return io.EOF // no body: the fields come from the path
		}
		err = m.unmarshal(body, v)
		if err != nil {
			// A duration written the Go way ("5m") is rewritten in
			// protobuf's form ("300s") and the body decoded again.
			// (Only then: a body that decodes as it is costs nothing more.)
			if pm, ok := v.(proto.Message); ok {
				fixed, derr := goDurations(body, pm.ProtoReflect().Descriptor())
				if derr != nil {
					return errors.New(strings.ToValidUTF8("request body: "+derr.Error(), "\uFFFD"))
				}
				if fixed != nil {
					body = fixed
					err = m.unmarshal(body, v)
				}
			}
		}
		if err != nil {
			msg := "request body: " + err.Error()
			if field := m.badField(body, v); field != "" {
				msg = fmt.Sprintf("request body: field %q: %v", field, err)
			}
			// The error may quote the body's bytes; a status message must
			// be valid UTF-8 to be sent at all.
			return errors.New(strings.ToValidUTF8(msg, "\uFFFD"))
		}
		return nil
	})
}

// unmarshal decodes a body that must be exactly one JSON value: protojson
// refuses anything after it, where the gateway's JSONPb.Unmarshal would
// decode the first value and ignore the rest.
func (m *jsonMarshaler) unmarshal(body []byte, v any) error {
	if req, ok := v.(*pb.CheckoutRequest); ok && decodeCheckout(body, req) {
		return nil
	}
	if msg, ok := v.(proto.Message); ok {
		return m.UnmarshalOptions.Unmarshal(body, msg)
	}
	return m.Unmarshal(body, v)
}

// badField names the top-level field of a JSON object body that protojson
// refuses, when one does: protojson's own errors give a line and column
// ("unexpected token 5") where the caller wants the field to fix.
func (m *jsonMarshaler) badField(body []byte, v any) string {
	msg, ok := v.(proto.Message)
	if !ok {
		return ""
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return "" // not an object: the error says where it breaks
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		one, err := json.Marshal(map[string]json.RawMessage{name: fields[name]})
		if err != nil {
			continue
		}
		if m.unmarshal(one, msg.ProtoReflect().New().Interface()) != nil {
			return name
		}
	}
	return ""
}
