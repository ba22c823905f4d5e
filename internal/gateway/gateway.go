// Package gateway is the REST/JSON face of the service: grpc-gateway
// translates HTTP calls into calls on the gRPC server, over a real client
// connection so that streaming works, and errors back into HTTP statuses.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
)

// Health reports whether the service can serve; nil means it can.
type Health func(ctx context.Context) error

// New returns the HTTP handler for the REST API over a connection to the
// gRPC server, with GET /healthz.
func New(ctx context.Context, conn *grpc.ClientConn, health Health) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &jsonMarshaler{runtime.JSONPb{
			// Show every scalar field, so that "created": false is visible.
			MarshalOptions: protojson.MarshalOptions{EmitDefaultValues: true},
			// An unknown field is a mistake the caller should hear about.
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
		runtime.WithErrorHandler(errorHandler),
	)
	client := pb.NewOrderServiceClient(conn)
	if err := pb.RegisterOrderServiceHandlerClient(ctx, mux, client); err != nil {
		return nil, err
	}
	// Registered after the generated handlers, so it takes their place.
	if err := mux.HandlePath(http.MethodGet, "/v1/expirations:watch", watchHandler(mux, client)); err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodGet, "/healthz", healthHandler(health)); err != nil {
		return nil, err
	}
	return mux, nil
}

// httpCodes overrides grpc-gateway's mapping where a more telling status
// exists: a state conflict is 409 (the gateway says 400), and a cursor past
// retention is 410 Gone, as a compacted watch is in Kubernetes.
var httpCodes = map[codes.Code]int{
	codes.FailedPrecondition: http.StatusConflict,
	codes.OutOfRange:         http.StatusGone,
}

func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var routing *runtime.HTTPStatusError
	if !errors.As(err, &routing) {
		if code, ok := httpCodes[status.Code(err)]; ok {
			w = statusWriter{ResponseWriter: w, code: code}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// statusWriter replaces the status code the gateway writes.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w statusWriter) WriteHeader(int) { w.ResponseWriter.WriteHeader(w.code) }

func healthHandler(health Health) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		if err := health(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"NOT_SERVING"}` + "\n"))
			return
		}
		_, _ = w.Write([]byte(`{"status":"SERVING"}` + "\n"))
	}
}

// jsonMarshaler is the gateway's JSON marshaler, with decoding errors that
// say they are about the request body.
type jsonMarshaler struct{ runtime.JSONPb }

func (m *jsonMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	d := m.JSONPb.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		if err := d.Decode(v); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("request body: %w", err)
		} else if err != nil {
			return err
		}
		return nil
	})
}
