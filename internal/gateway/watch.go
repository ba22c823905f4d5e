package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
)

// watchHandler serves GET /v1/expirations:watch as newline-delimited JSON:
// one ExpirationEvent a line, flushed as it comes; or, for a client that
// accepts text/event-stream, as Server-Sent Events (sse.go). It stands in
// for the generated handler for two reasons: the status line and headers go
// out as soon as the watch is accepted (the generated one waits for the
// first event, which may be minutes away), and each line is the bare event
// rather than wrapped in {"result": …}. An error after the watch was
// accepted comes as a last line {"error": {code, message}} (an SSE
// watch-error event); one before it as the HTTP status.
//
// Each write has writeTimeout to complete. A client that stops reading
// would otherwise keep its connection, this handler and the gRPC stream
// behind it forever: the hub drops such a watcher from its fan-out, but the
// handler, blocked in a write, cannot learn of it. When the write fails the
// handler returns, which ends the gRPC stream, and net/http closes the
// connection.
func watchHandler(mux *runtime.ServeMux, client pb.OrderServiceClient, writeTimeout time.Duration) runtime.HandlerFunc {
	marshal := protojson.MarshalOptions{EmitDefaultValues: true}
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		_, outbound := runtime.MarshalerForRequest(mux, r)
		fail := func(err error) { runtime.HTTPError(r.Context(), mux, outbound, w, r, err) }

		req, err := watchRequest(r)
		format := ndjsonFormat
		if err == nil && acceptsEventStream(r) {
			format = sseFormat
			err = lastEventID(r, req)
		}
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
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
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
		// write sends chunk at once, within writeTimeout. (A writer that
		// cannot take a deadline, which no net/http server gives, has
		// none.)
		write := func(chunk []byte) error {
			_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			return rc.Flush()
		}
		w.Header().Set("Content-Type", format.contentType)
		w.Header().Set("Cache-Control", "no-store")
		for k, v := range format.headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(http.StatusOK)
		if err := write(format.preamble); err != nil {
			return
		}

		received := make(chan recvResult)
		go receive(ctx, stream, received)
		defer func() {
			cancel()
			for range received { // until receive has returned
			}
		}()

		// Heartbeats go out after each quiet interval, where the format has
		// them; a nil channel never fires.
		every := sseHeartbeat
		var quiet *time.Timer
		var quietC <-chan time.Time
		if format.heartbeat != nil {
			quiet = time.NewTimer(every)
			defer quiet.Stop()
			quietC = quiet.C
		}
		for {
			var chunk []byte
			var end bool
			select {
			case <-quietC:
				chunk = format.heartbeat
			case got, ok := <-received:
				if !ok || errors.Is(got.err, io.EOF) {
					return // ctx is done, or the watch ended
				}
				if got.err != nil {
					if r.Context().Err() != nil {
						return // the client went away
					}
					chunk, end = format.failure(errorJSON(got.err)), true
				} else if data, err := marshal.Marshal(got.ev); err != nil {
					return
				} else {
					chunk = format.event(got.ev.GetCursor(), data)
				}
			}
			if err := write(chunk); err != nil || end {
				return
			}
			if quiet != nil {
				quiet.Reset(every)
			}
		}
	}
}

// watchFormat is how a watch response frames what it sends.
type watchFormat struct {
	contentType string
	headers     map[string]string // besides Content-Type and Cache-Control
	preamble    []byte            // written with the headers
	heartbeat   []byte            // written after each quiet sseHeartbeat; nil: none
	// event frames one event, the data its JSON; failure frames the error
	// that ends a watch, given as {"code":…,"status":…,"message":…}.
	event   func(cursor string, data []byte) []byte
	failure func(data []byte) []byte
}

// ndjsonFormat is one JSON object a line.
var ndjsonFormat = watchFormat{
	contentType: "application/x-ndjson",
	event:       func(_ string, data []byte) []byte { return append(data, '\n') },
	failure:     func(data []byte) []byte { return fmt.Appendf(nil, `{"error":%s}`+"\n", data) },
}

// errorJSON is the error that ends a watch as one line of JSON.
func errorJSON(err error) []byte {
	st := status.Convert(err)
	b, _ := json.Marshal(watchError{Code: int(st.Code()), Status: code.Code(st.Code()).String(), Message: st.Message()})
	return b
}

// watchError is the body of the error that ends a watch.
type watchError struct {
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// recvResult is what one stream.Recv returned.
type recvResult struct {
	ev  *pb.ExpirationEvent
	err error
}

// receive passes on what the stream receives until it ends or ctx is done,
// so that the handler can wait for an event and a heartbeat at once, and
// closes out when it returns. The handler owns it: it cancels ctx (which
// also ends a blocked Recv) and reads out until it is closed before it
// returns.
func receive(ctx context.Context, stream grpc.ServerStreamingClient[pb.ExpirationEvent], out chan<- recvResult) {
	defer close(out)
	for {
		ev, err := stream.Recv()
		select {
		case out <- recvResult{ev, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
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
