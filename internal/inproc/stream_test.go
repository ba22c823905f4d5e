package inproc

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestServerStream: a server stream runs its method through the stream
// interceptors, in order, with the caller's outgoing metadata as incoming
// metadata and its request copied in; the caller gets the header, a copy of
// each message in order, then the method's error as a status with the
// trailer set.
func TestServerStream(t *testing.T) {
	var ran []string
	// What the method sends, a fresh message each (a method may not change
	// a message once sent).
	sent := make([]*pb.ExpirationEvent, 3)
	for i := range sent {
		sent[i] = &pb.ExpirationEvent{OrderId: "o-" + strconv.Itoa(i), Metadata: map[string]string{"k": "v"}}
	}
	record := func(name string) grpc.StreamServerInterceptor {
		return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if info.FullMethod != pb.OrderService_WatchExpirations_FullMethodName || !info.IsServerStream || info.IsClientStream {
				t.Errorf("%s: info %+v", name, info)
			}
			ran = append(ran, name)
			return handler(srv, ss)
		}
	}
	f := &fakeService{watch: func(req *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
		ctx := stream.Context()
		ran = append(ran, "method")
		if md, _ := metadata.FromIncomingContext(ctx); strings.Join(md.Get("authorization"), ",") != "Bearer x" {
			t.Errorf("incoming metadata %v", md)
		}
		if !InProcess(ctx) {
			t.Error("InProcess is false in the method")
		}
		if req.GetAfterCursor() != "c-0" {
			t.Errorf("request %v", req)
		}
		req.AfterCursor = "changed by the method"
		if err := stream.SetHeader(metadata.Pairs("h", "1")); err != nil {
			t.Error(err)
		}
		for _, ev := range sent {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		stream.SetTrailer(metadata.Pairs("t", "2"))
		return status.Error(codes.ResourceExhausted, "too slow")
	}}
	client := newClient(t, f, Options{StreamInterceptors: []grpc.StreamServerInterceptor{record("first"), record("second")}})
	if InProcess(context.Background()) {
		t.Error("InProcess is true outside a call")
	}

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer x")
	req := &pb.WatchExpirationsRequest{AfterCursor: "c-0"}
	stream, err := client.WatchExpirations(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if md, err := stream.Header(); err != nil || strings.Join(md.Get("h"), ",") != "1" {
		t.Errorf("header %v, %v", md, err)
	}
	var got []string
	for i := 0; ; i++ {
		ev, err := stream.Recv()
		if err != nil {
			if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "too slow" {
				t.Errorf("the stream ended with %v, want RESOURCE_EXHAUSTED too slow", err)
			}
			break
		}
		got = append(got, ev.GetOrderId())
		// The caller's message is its own: changing it leaves the
		// method's as it was.
		if i < len(sent) && (ev == sent[i] || !proto.Equal(ev, sent[i])) {
			t.Errorf("message %d: %v (the method's own: %v), want a copy of %v", i, ev, ev == sent[i], sent[i])
		}
		ev.Metadata["k"] = "changed by the caller"
	}
	if strings.Join(got, ",") != "o-0,o-1,o-2" {
		t.Errorf("received %v, want o-0, o-1, o-2", got)
	}
	for _, ev := range sent {
		if ev.GetMetadata()["k"] != "v" {
			t.Errorf("the caller's change reached the method's message %v", ev)
		}
	}
	if strings.Join(ran, ",") != "first,second,method" {
		t.Errorf("ran %v, want first, second, method", ran)
	}
	if tr := stream.Trailer(); strings.Join(tr.Get("t"), ",") != "2" {
		t.Errorf("trailer %v", tr)
	}
	if req.AfterCursor != "c-0" {
		t.Errorf("the caller's request was changed: %v", req)
	}
}

// TestServerStreamRefused: a method that fails before it sends anything
// sends no header (Header is nil, as from a server, which is how the
// gateway tells a refused watch) and its status is Recv's; one that
// returns nil ends the stream with io.EOF after its messages; a plain error
// is UNKNOWN.
func TestServerStreamRefused(t *testing.T) {
	var fail error
	sends := 0
	f := &fakeService{watch: func(_ *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
		for range sends {
			if err := stream.Send(&pb.ExpirationEvent{OrderId: "o"}); err != nil {
				return err
			}
		}
		return fail
	}}
	client := newClient(t, f, Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		sends int
		fail  error
		code  codes.Code
	}{
		{0, status.Error(codes.Unauthenticated, "no token"), codes.Unauthenticated},
		{0, errors.New("plain"), codes.Unknown},
		{2, nil, codes.OK},
		{2, status.Error(codes.Unavailable, "gone"), codes.Unavailable},
	} {
		sends, fail = tc.sends, tc.fail
		stream, err := client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		md, _ := stream.Header()
		if (md == nil) != (tc.sends == 0) {
			t.Errorf("%d sends then %v: header %v", tc.sends, tc.fail, md)
		}
		n := 0
		for {
			_, err = stream.Recv()
			if err != nil {
				break
			}
			n++
		}
		if tc.code == codes.OK {
			if !errors.Is(err, io.EOF) {
				t.Errorf("a method that returned nil: Recv %v, want io.EOF", err)
			}
		} else if status.Code(err) != tc.code {
			t.Errorf("method error %v: Recv %v, want %v", tc.fail, err, tc.code)
		}
		if n != tc.sends {
			t.Errorf("%d messages received of %d sent", n, tc.sends)
		}
	}
}

// TestServerStreamWaitsForTheCaller: a method sends no further than
// streamBuffer messages ahead of a caller that does not read, and once the
// caller's context ends, its blocked Send returns CANCELED, the method's
// context is done and the caller's Recv ends.
func TestServerStreamWaitsForTheCaller(t *testing.T) {
	sent := make(chan int, 1000)
	ended := make(chan error, 1)
	f := &fakeService{watch: func(_ *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
		for i := 0; ; i++ {
			if err := stream.Send(&pb.ExpirationEvent{OrderId: "o"}); err != nil {
				ended <- err
				if stream.Context().Err() == nil {
					t.Error("Send failed while the method's context was live")
				}
				return err
			}
			sent <- i + 1
		}
	}}
	client := newClient(t, f, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The method sends streamBuffer messages however long a busy machine
	// makes it take, and then no more.
	most := 0
	for most < streamBuffer {
		select {
		case most = <-sent:
		case <-time.After(10 * time.Second):
			t.Fatalf("the method sent %d messages ahead of a caller that read none, want %d", most, streamBuffer)
		}
	}
	select {
	case n := <-sent:
		t.Errorf("the method sent message %d ahead of a caller that read none, want %d at most", n, streamBuffer)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := <-sent; n != streamBuffer+1 {
		t.Errorf("after one Recv the method sent message %d, want %d", n, streamBuffer+1)
	}
	cancel()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Canceled {
			t.Errorf("the blocked Send returned %v, want CANCELED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the method's Send did not return after the caller's context ended")
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if status.Code(err) != codes.Canceled {
				t.Errorf("Recv after the cancel: %v, want CANCELED", err)
			}
			break
		}
	}
}

// TestServerStreamCallerLeaves: the caller's Recv ends when its context
// does, even when the method does not heed its own context and goes on.
func TestServerStreamCallerLeaves(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := &fakeService{watch: func(_ *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
		if err := stream.SendHeader(nil); err != nil {
			return err
		}
		<-release
		return nil
	}}
	client := newClient(t, f, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := stream.Header(); md == nil {
		t.Fatal("no header")
	}
	got := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		got <- err
	}()
	cancel()
	select {
	case err := <-got:
		if status.Code(err) != codes.Canceled {
			t.Errorf("Recv after the caller's cancel: %v, want CANCELED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv did not return after the caller's context ended")
	}
}
