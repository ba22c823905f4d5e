package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
)

// watchHandler serves GET /v1/expirations:watch as newline-delimited JSON:
// one ExpirationEvent a line, flushed as it comes. It stands in for the
// generated handler for two reasons: the status line and headers go out as
// soon as the watch is accepted (the generated one waits for the first
// event, which may be minutes away), and each line is the bare event rather
// than wrapped in {"result": …}. An error after the watch was accepted comes
// as a last line {"error": {code, message}}; one before it as the HTTP status.
func watchHandler(mux *runtime.ServeMux, client pb.OrderServiceClient) runtime.HandlerFunc {
	marshal := protojson.MarshalOptions{EmitDefaultValues: true}
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		_, outbound := runtime.MarshalerForRequest(mux, r)
		fail := func(err error) { runtime.HTTPError(r.Context(), mux, outbound, w, r, err) }

		req, err := watchRequest(r)
		if err != nil {
			fail(err)
			return
		}
		ctx, err := runtime.AnnotateContext(r.Context(), mux, r, pb.OrderService_WatchExpirations_FullMethodName,
			runtime.WithHTTPPathPattern("/v1/expirations:watch"))
		if err != nil {
			fail(err)
			return
		}
		stream, err := client.WatchExpirations(ctx, req)
		if err != nil {
			fail(err)
			return
		}
		// The server sends its header once it has accepted the watch; a
		// rejected watch ends with a status and no header.
		if md, _ := stream.Header(); md == nil {
			_, err := stream.Recv()
			if err == nil || errors.Is(err, io.EOF) {
				err = status.Error(codes.Internal, "the watch ended before it started")
			}
			fail(err)
			return
		}
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
		for {
			ev, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			var line []byte
			if err != nil {
				if r.Context().Err() != nil {
					return // the client went away
				}
				st := status.Convert(err)
				line = fmt.Appendf(nil, `{"error":{"code":%d,"status":%q,"message":%q}}`, st.Code(), code.Code(st.Code()).String(), st.Message())
			} else if line, err = marshal.Marshal(ev); err != nil {
				return
			}
			line = append(line, '\n')
			if _, werr := w.Write(line); werr != nil {
				return
			}
			if werr := rc.Flush(); werr != nil || err != nil {
				return
			}
		}
	}
}

// watchRequest reads the query of a watch, refusing parameters it does not
// know so that a misspelt after_cursor is not silently ignored.
func watchRequest(r *http.Request) (*pb.WatchExpirationsRequest, error) {
	q := r.URL.Query()
	var unknown []string
	for k := range q {
		if k != "after_cursor" && k != "afterCursor" {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %s; the only one is after_cursor", strings.Join(unknown, ", "))
	}
	var cursor string
	for _, k := range []string{"after_cursor", "afterCursor"} {
		if vs := q[k]; len(vs) > 0 {
			if len(vs) > 1 || cursor != "" {
				return nil, status.Error(codes.InvalidArgument, "after_cursor is given more than once")
			}
			cursor = vs[0]
		}
	}
	return &pb.WatchExpirationsRequest{AfterCursor: cursor}, nil
}
