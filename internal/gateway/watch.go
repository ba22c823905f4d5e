package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// watchHandler serves GET /v1/expirations:watch as newline-delimited JSON:
// one ExpirationEvent a line, flushed as it comes; or, for a client that
// accepts text/event-stream, as Server-Sent Events (sse.go), each event's
// cursor its id. An EventSource's Last-Event-ID resumes after that cursor.
func watchHandler(mux *runtime.ServeMux, client pb.OrderServiceClient, writeTimeout time.Duration) runtime.HandlerFunc {
	return streamHandler(mux, streamCall[*pb.WatchExpirationsRequest, pb.ExpirationEvent, *pb.ExpirationEvent]{
		method:  pb.OrderService_WatchExpirations_FullMethodName,
		pattern: "/v1/expirations:watch",
		request: func(r *http.Request, _ map[string]string, sse bool) (*pb.WatchExpirationsRequest, error) {
			q, err := query(r, "after_cursor")
			if err != nil {
				return nil, err
			}
			req := &pb.WatchExpirationsRequest{AfterCursor: q["after_cursor"]}
			if sse {
				err = lastEventID(r, req)
			}
			return req, err
		},
		open: client.WatchExpirations,
		id:   (*pb.ExpirationEvent).GetCursor,
	}, writeTimeout)
}

// consumeHandler serves GET /v1/groups/{group_id}/expirations:consume, a
// consumer's stream of a group, as watchHandler serves a watch: one
// ReceivedExpiration a line, or an SSE event whose id is its ack id.
func consumeHandler(mux *runtime.ServeMux, client pb.OrderServiceClient, writeTimeout time.Duration) runtime.HandlerFunc {
	return streamHandler(mux, streamCall[*pb.ConsumeExpirationsRequest, pb.ReceivedExpiration, *pb.ReceivedExpiration]{
		method:  pb.OrderService_ConsumeExpirations_FullMethodName,
		pattern: "/v1/groups/{group_id}/expirations:consume",
		request: func(r *http.Request, params map[string]string, _ bool) (*pb.ConsumeExpirationsRequest, error) {
			q, err := query(r, "consumer", "max_in_flight")
			if err != nil {
				return nil, err
			}
			req := &pb.ConsumeExpirationsRequest{GroupId: params["group_id"], Consumer: q["consumer"]}
			if v := q["max_in_flight"]; v != "" {
				n, err := strconv.ParseInt(v, 10, 32)
				if err != nil {
					return nil, status.Errorf(codes.InvalidArgument, "max_in_flight %q is not a whole number", order.Clip(v))
				}
				req.MaxInFlight = int32(n)
			}
			return req, nil
		},
		open: client.ConsumeExpirations,
		id:   (*pb.ReceivedExpiration).GetAckId,
	}, writeTimeout)
}

// streamCall says how one server-streaming call is served over REST: how a
// request is read, how the stream is opened and what a message's SSE id is.
type streamCall[Req, Msg any, P message[Msg]] struct {
	method, pattern string
	// request reads the call's request; sse says the client asked for an
	// event stream.
	request func(r *http.Request, params map[string]string, sse bool) (Req, error)
	open    func(ctx context.Context, req Req, opts ...grpc.CallOption) (grpc.ServerStreamingClient[Msg], error)
	id      func(P) string
}

// message is a generated message type's pointer, which protojson marshals.
type message[Msg any] interface {
	*Msg
	proto.Message
}

// streamHandler serves a server-streaming call as newline-delimited JSON or
// Server-Sent Events. It stands in for the generated handler for two
// reasons: the status line and headers go out as soon as the stream is
// accepted (the generated one waits for the first message, which may be
// minutes away), and each line is the bare message rather than wrapped in
// {"result": …}. An error after the stream was accepted comes as a last
// line {"error": {code, message}} (an SSE watch-error event); one before it
// as the HTTP status.
//
// Each write has writeTimeout to complete. A client that stops reading
// would otherwise keep its connection, this handler and the gRPC stream
// behind it forever: the hub drops such a watcher from its fan-out, but the
// handler, blocked in a write, cannot learn of it. When the write fails the
// handler returns, which ends the gRPC stream, and net/http closes the
// connection.
func streamHandler[Req, Msg any, P message[Msg]](mux *runtime.ServeMux, call streamCall[Req, Msg, P], writeTimeout time.Duration) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		_, outbound := runtime.MarshalerForRequest(mux, r)
		fail := func(err error) { runtime.HTTPError(r.Context(), mux, outbound, w, r, err) }

		format := ndjsonFormat
		sse := acceptsEventStream(r)
		if sse {
			format = sseFormat
		}
		req, err := call.request(r, params, sse)
		if err != nil {
			fail(err)
			return
		}
		ctx, err := runtime.AnnotateContext(r.Context(), mux, r, call.method, runtime.WithHTTPPathPattern(call.pattern))
		if err != nil {
			fail(err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := call.open(ctx, req)
		if err != nil {
			fail(err)
			return
		}
		// The server sends its header once it has accepted the stream; a
		// rejected one ends with a status and no header.
		if md, _ := stream.Header(); md == nil {
			_, err := stream.Recv()
			if err == nil || errors.Is(err, io.EOF) {
				err = status.Error(codes.Internal, "the stream ended before it started")
			}
			fail(err)
			return
		}
		rc := http.NewResponseController(w)
		// write queues chunk and, unless more is to follow at once, sends
		// what is queued: all of it within writeTimeout of its first
		// write. (A writer that cannot take a deadline, which no net/http
		// server gives, has none.) In a burst, one write system call then
		// carries many events instead of one each, which was a quarter of
		// the service's CPU when 100,000 orders expired within a second
		// (benchmark 1b's profile).
		queued := 0
		write := func(chunk []byte, more bool) error {
			if queued == 0 {
				_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			}
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			if queued += len(chunk); more && queued < maxQueued {
				return nil
			}
			queued = 0
			return rc.Flush()
		}
		w.Header().Set("Content-Type", format.contentType)
		w.Header().Set("Cache-Control", "no-store")
		for k, v := range format.headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(http.StatusOK)
		if err := write(format.preamble, false); err != nil {
			return
		}

		// Buffered, so that the handler can tell that more events are
		// waiting and the stream keeps receiving while it writes.
		received := make(chan recvResult[*Msg], maxQueuedEvents)
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
					return // ctx is done, or the stream ended
				}
				if got.err != nil {
					if r.Context().Err() != nil {
						return // the client went away
					}
					chunk, end = format.failure(errorJSON(got.err)), true
				} else if data, err := outbound.Marshal(P(got.msg)); err != nil {
					return
				} else {
					chunk = format.event(call.id(P(got.msg)), data)
				}
			}
			if err := write(chunk, !end && len(received) > 0); err != nil || end {
				return
			}
			if quiet != nil {
				quiet.Reset(every)
			}
		}
	}
}

const (
	// maxQueued bounds what a watch response holds back for one write:
	// past it, the events queued go out even if more are waiting.
	maxQueued = 32 << 10
	// maxQueuedEvents is how many received messages wait for the handler.
	maxQueuedEvents = 256
)

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
type recvResult[Msg any] struct {
	msg Msg
	err error
}

// receive passes on what the stream receives until it ends or ctx is done,
// so that the handler can wait for an event and a heartbeat at once, and
// closes out when it returns. The handler owns it: it cancels ctx (which
// also ends a blocked Recv) and reads out until it is closed before it
// returns.
func receive[Msg any](ctx context.Context, stream grpc.ServerStreamingClient[Msg], out chan<- recvResult[*Msg]) {
	defer close(out)
	for {
		msg, err := stream.Recv()
		select {
		case out <- recvResult[*Msg]{msg, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// query reads the parameters of a streaming call's query, each by its
// proto name or its JSON (lowerCamel) name, refusing parameters it does not
// know so that a misspelt one is not silently ignored.
func query(r *http.Request, names ...string) (map[string]string, error) {
	known := map[string]string{}
	for _, n := range names {
		known[n] = n
		known[lowerCamel(n)] = n
	}
	out := map[string]string{}
	var unknown []string
	for k, vs := range r.URL.Query() {
		n, ok := known[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		if _, dup := out[n]; dup || len(vs) > 1 {
			return nil, status.Errorf(codes.InvalidArgument, "%s is given more than once", n)
		}
		out[n] = vs[0]
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %s; the parameters are %s", order.Clip(strings.Join(unknown, ", ")), strings.Join(names, ", "))
	}
	return out, nil
}

// lowerCamel is a proto field name's JSON name: after_cursor, afterCursor.
func lowerCamel(name string) string {
	parts := strings.Split(name, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
