package gateway

import (
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// sseHeartbeat is how long an event stream may stay quiet before a comment
// line goes out, so that proxies and load balancers do not close it as idle.
// A variable so that tests can shorten it.
var sseHeartbeat = 15 * time.Second

// sseFormat is the watch as Server-Sent Events, for browsers' EventSource:
// each expiration an event with the cursor as its id (which EventSource
// sends back as Last-Event-ID when it reconnects) and the same JSON as an
// NDJSON line as its data; no event type, so onmessage fires. The error
// that ends a watch is a watch-error event; the browser then reconnects
// after the retry delay and resumes where it was.
var sseFormat = watchFormat{
	contentType: "text/event-stream",
	headers:     map[string]string{"X-Accel-Buffering": "no"}, // nginx: pass each event on at once
	preamble:    []byte("retry: 1000\n\n"),
	heartbeat:   []byte(": heartbeat\n\n"),
	// protojson and errorJSON write no line breaks, so data is one line.
	event: func(cursor string, data []byte) []byte {
		return fmt.Appendf(nil, "id: %s\ndata: %s\n\n", cursor, data)
	},
	failure: func(data []byte) []byte { return fmt.Appendf(nil, "event: watch-error\ndata: %s\n\n", data) },
}

// acceptsEventStream reports whether the request's Accept list names
// text/event-stream, as an EventSource's does.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(part)
			if err == nil && mt == "text/event-stream" && params["q"] != "0" {
				return true
			}
		}
	}
	return false
}

// lastEventID applies the Last-Event-ID header, which an EventSource sends
// when it reconnects: the id, so the cursor, of the last event it received.
// It wins over after_cursor, which the page's URL still carries from the
// first connection.
func lastEventID(r *http.Request, req *pb.WatchExpirationsRequest) error {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		return nil
	}
	if _, err := order.ParseCursor("Last-Event-ID", id); err != nil {
		if len(id) > 64 {
			id = id[:64] + "…"
		}
		return status.Errorf(codes.InvalidArgument, "the Last-Event-ID header %q is not a cursor: it must be the id of an event this watch sent, like \"1732170000000-0\"", id)
	}
	req.AfterCursor = id
	return nil
}
