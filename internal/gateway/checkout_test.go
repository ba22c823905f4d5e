package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// recordingClient is an OrderService client whose Checkout records what it
// was called with and answers what answer says.
type recordingClient struct {
	pb.OrderServiceClient // nil: only Checkout is called
	answer                func(*pb.CheckoutRequest) (resp *pb.CheckoutResponse, header, trailer metadata.MD, err error)
	calls                 []string
}

func (c *recordingClient) Checkout(ctx context.Context, in *pb.CheckoutRequest, opts ...grpc.CallOption) (*pb.CheckoutResponse, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	c.calls = append(c.calls, fmt.Sprintf("metadata %v request %v", md, in))
	resp, header, trailer, err := c.answer(proto.Clone(in).(*pb.CheckoutRequest))
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = trailer
		}
	}
	return resp, err
}

// TestCheckoutRouteMatchesMux: for requests of every kind (headers the
// metadata is made of or not, bodies good and bad, answers with metadata,
// trailers and errors, requests the route leaves to the mux), checkoutRoute
// calls Checkout with the same metadata and request as grpc-gateway's
// generated handler, and answers the same status, headers and body.
func TestCheckoutRouteMatchesMux(t *testing.T) {
	order := &pb.Order{OrderId: "o-1", Status: pb.OrderStatus_ORDER_STATUS_PENDING, Deadline: timestamppb.New(timestamppb.Now().AsTime().Truncate(1e6))}
	answers := map[string]func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error){
		"created": func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error) {
			return &pb.CheckoutResponse{Order: order, Created: true}, nil, nil, nil
		},
		"with metadata": func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error) {
			return &pb.CheckoutResponse{Order: order}, metadata.Pairs("x-one", "1", "x-two", "2"), metadata.Pairs("x-after", "3"), nil
		},
		"not found": func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error) {
			return nil, metadata.Pairs("x-one", "1"), metadata.Pairs("x-after", "3"), status.Error(codes.NotFound, "no such order")
		},
		"unauthenticated": func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error) {
			return nil, nil, nil, status.Error(codes.Unauthenticated, "no token")
		},
		"plain error": func(*pb.CheckoutRequest) (*pb.CheckoutResponse, metadata.MD, metadata.MD, error) {
			return nil, nil, nil, fmt.Errorf("not a status")
		},
	}
	type request struct {
		name, method, path, body string
		header                   http.Header
		host, remote             string
		toMux                    bool // the route leaves it to the mux
	}
	good := `{"orderId":"o-1","ttl":"60s","metadata":{"k":"v"}}`
	json := http.Header{"Content-Type": {"application/json"}}
	with := func(kv ...string) http.Header {
		h := json.Clone()
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	requests := []request{
		{name: "plain", body: good, header: json},
		{name: "token", body: good, header: with("Authorization", "Bearer t-1")},
		{name: "two tokens", body: good, header: with("Authorization", "Bearer t-1", "Authorization", "Bearer t-2")},
		{name: "token gRPC cannot carry", body: good, header: with("Authorization", "Bearer tö")},
		{name: "forwarded", body: good, header: with("X-Forwarded-For", "10.0.0.1", "X-Forwarded-For", "10.0.0.2, 10.0.0.3", "X-Forwarded-Host", "shop.example")},
		{name: "forwarded host gRPC cannot carry", body: good, header: with("X-Forwarded-Host", "shöp.example")},
		{name: "forwarded for gRPC cannot carry", body: good, header: with("X-Forwarded-For", "10.0.0.1\x01")},
		{name: "host gRPC cannot carry", body: good, header: json, host: "shöp.example"},
		{name: "no host", body: good, header: json, host: "-"},
		{name: "remote address without port", body: good, header: json, remote: "192.0.2.1"},
		{name: "other headers", body: good, header: with("Grpc-Metadata-X-Custom", "1", "Accept", "application/json", "User-Agent", "test", "Cookie", "a=b", "X-Request-Id", "r-1")},
		{name: "trailers asked for", body: good, header: with("TE", "trailers")},
		{name: "timeout", body: good, header: with("Grpc-Timeout", "1S"), toMux: true},
		{name: "bad timeout", body: good, header: with("Grpc-Timeout", "soon"), toMux: true},
		{name: "method override", body: good, header: with("X-HTTP-Method-Override", "GET"), toMux: true},
		{name: "escaped path", path: "/v1/%6Frders", body: good, header: json, toMux: true},
		{name: "trailing slash", path: "/v1/orders/", body: good, header: json, toMux: true},
		{name: "PUT", method: http.MethodPut, body: good, header: json, toMux: true},
		{name: "Go duration", body: `{"orderId":"o-1","ttl":"5m"}`, header: json},
		{name: "deadline", body: `{"orderId":"o-1","deadline":"2030-01-01T00:00:00Z"}`, header: json},
		{name: "snake case", body: `{"order_id":"o-1","ttl":"60s"}`, header: json},
		{name: "unknown field", body: `{"orderId":"o-1","tll":"60s"}`, header: json},
		{name: "bad duration", body: `{"orderId":"o-1","ttl":"soon"}`, header: json},
		{name: "not JSON", body: `{"orderId":`, header: json},
		{name: "two values", body: good + good, header: json},
		{name: "empty body", body: "", header: json},
		{name: "spaces", body: "  \n", header: json},
		{name: "not UTF-8", body: "{\"orderId\":\"o-\xff\"}", header: json},
	}
	serve := func(h http.Handler, rq request) *httptest.ResponseRecorder {
		method, path := rq.method, rq.path
		if method == "" {
			method = http.MethodPost
		}
		if path == "" {
			path = "/v1/orders"
		}
		r := httptest.NewRequest(method, path, strings.NewReader(rq.body))
		r.Header = rq.header.Clone()
		switch rq.host {
		case "":
		case "-":
			r.Host = ""
		default:
			r.Host = rq.host
		}
		if rq.remote != "" {
			r.RemoteAddr = rq.remote
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for aname, answer := range answers {
		for _, rq := range requests {
			t.Run(aname+"/"+rq.name, func(t *testing.T) {
				var got [2]*httptest.ResponseRecorder
				var calls [2][]string
				toMux := false
				for k := range 2 {
					client := &recordingClient{answer: answer}
					mux, m := newMux()
					if err := pb.RegisterOrderServiceHandlerClient(context.Background(), mux, client); err != nil {
						t.Fatal(err)
					}
					var h http.Handler = mux
					if k == 1 {
						h = checkoutRoute(mux, m, client, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							toMux = true
							mux.ServeHTTP(w, r)
						}))
					}
					got[k] = serve(h, rq)
					calls[k] = client.calls
				}
				if toMux != rq.toMux {
					t.Errorf("left to the mux: %v, want %v", toMux, rq.toMux)
				}
				mux, route := got[0], got[1]
				if !reflect.DeepEqual(calls[0], calls[1]) {
					t.Errorf("the mux called %q, the route %q", calls[0], calls[1])
				}
				if mux.Code != route.Code || mux.Body.String() != route.Body.String() {
					t.Errorf("the mux answered %d %s, the route %d %s", mux.Code, mux.Body, route.Code, route.Body)
				}
				if !reflect.DeepEqual(mux.Header(), route.Header()) {
					t.Errorf("the mux's headers %v, the route's %v", mux.Header(), route.Header())
				}
				if rq.name == "plain" && aname == "created" && (len(calls[1]) != 1 || route.Code != http.StatusOK) {
					t.Errorf("a plain checkout: calls %q, status %d", calls[1], route.Code)
				}
			})
		}
	}
}
