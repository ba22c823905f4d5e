package rpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/inproc"
	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	"github.com/orderexpiry/orderexpiry/internal/watch"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// downStats is the memory store with a Stats that fails as a store that
// cannot be reached does: GetStats has no request to get wrong.
type downStats struct{ *memstore.Store }

func (downStats) Stats(context.Context) (order.Stats, error) {
	return order.Stats{}, order.Unavailable(errors.New("connection refused"))
}

// edgeServer serves the service over a buffer, as NewServer builds it, and
// in process, as the gateway calls it: the connections to each.
func edgeServer(t *testing.T, opts rpc.Options) (*grpc.ClientConn, *inproc.Conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := memstore.New(memstore.Options{})
	hub := watch.NewHub(st, watch.Options{})
	go func() { _ = st.Run(ctx) }()
	go func() { _ = hub.Run(ctx) }()
	opts.Limits = order.DefaultLimits
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := rpc.New(downStats{st}, hub, opts)
	srv := rpc.NewServer(svc)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///rpc-test",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	local := inproc.New(inproc.Options{Interceptors: svc.UnaryInterceptors(), StreamInterceptors: svc.StreamInterceptors()})
	pb.RegisterOrderServiceServer(local, svc)
	return conn, local
}

// TestEveryMethodsErrorsHaveDetails: every method of the service, unary or
// stream, answers a domain error with the status of its kind and the
// details the edge adds (ErrorInfo with the reason in ErrorDomain; for an
// invalid request about a field, BadRequest naming it), so that no method
// can return its errors past the interceptors, on the gRPC port or in the
// gateway's in-process calls. The table is checked against the service
// descriptor: a method added without a row fails.
func TestEveryMethodsErrorsHaveDetails(t *testing.T) {
	conn, local := edgeServer(t, rpc.Options{Settings: rpc.Settings{order.ReasonInFlightLimit: "-max-in-flight"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewOrderServiceClient(conn).CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "g"}); err != nil {
		t.Fatal(err)
	}

	type row struct {
		req    proto.Message
		reason order.ErrorReason
		field  string // the field the error is about; "" for none
	}
	rows := map[string]row{
		"Checkout":               {&pb.CheckoutRequest{}, order.ReasonInvalidID, "order_id"},
		"BatchCheckout":          {&pb.BatchCheckoutRequest{}, order.ReasonInvalidArgument, "requests"},
		"GetOrder":               {&pb.GetOrderRequest{OrderId: "nope"}, order.ReasonOrderNotFound, "order_id"},
		"ListOrders":             {&pb.ListOrdersRequest{Filter: "status ="}, order.ReasonInvalidFilter, "filter"},
		"BulkChangeOrders":       {&pb.BulkChangeOrdersRequest{}, order.ReasonInvalidArgument, ""},
		"GetOperation":           {&pb.GetOperationRequest{Name: "operations/nope"}, order.ReasonOperationNotFound, "name"},
		"ListOperations":         {&pb.ListOperationsRequest{PageSize: -1}, order.ReasonInvalidArgument, "page_size"},
		"CancelOperation":        {&pb.CancelOperationRequest{Name: "nope"}, order.ReasonInvalidID, "name"},
		"CompleteOrder":          {&pb.CompleteOrderRequest{OrderId: "nope"}, order.ReasonOrderNotFound, "order_id"},
		"CancelOrder":            {&pb.CancelOrderRequest{}, order.ReasonInvalidID, "order_id"},
		"RescheduleOrder":        {&pb.RescheduleOrderRequest{OrderId: "o", NewDeadline: &pb.RescheduleOrderRequest_Ttl{Ttl: durationpb.New(0)}}, order.ReasonInvalidTTL, "ttl"},
		"WatchExpirations":       {&pb.WatchExpirationsRequest{AfterCursor: "x"}, order.ReasonInvalidCursor, "after_cursor"},
		"CreateConsumerGroup":    {&pb.CreateConsumerGroupRequest{GroupId: "h", StartAfterCursor: "1-0,2-0"}, order.ReasonInvalidCursor, "start_after_cursor"},
		"GetConsumerGroup":       {&pb.GetConsumerGroupRequest{GroupId: "nope"}, order.ReasonGroupNotFound, "group_id"},
		"ListConsumerGroups":     {&pb.ListConsumerGroupsRequest{PageToken: "no/such"}, order.ReasonInvalidID, "page_token"},
		"DeleteConsumerGroup":    {&pb.DeleteConsumerGroupRequest{}, order.ReasonInvalidID, "group_id"},
		"ConsumeExpirations":     {&pb.ConsumeExpirationsRequest{GroupId: "nope"}, order.ReasonGroupNotFound, "group_id"},
		"PullExpirations":        {&pb.PullExpirationsRequest{GroupId: "g", MaxEvents: 1 << 20}, order.ReasonInFlightLimit, "max_events"},
		"AcknowledgeExpirations": {&pb.AcknowledgeExpirationsRequest{GroupId: "g"}, order.ReasonInvalidArgument, "ack_ids"},
		"NackExpirations":        {&pb.NackExpirationsRequest{GroupId: "g", AckIds: []string{"x"}, RetryAfter: durationpb.New(-time.Second)}, order.ReasonInvalidArgument, "retry_after"},
		"ListDeadLetters":        {&pb.ListDeadLettersRequest{GroupId: "g", PageSize: -1}, order.ReasonInvalidArgument, "page_size"},
		"RedriveDeadLetters":     {&pb.RedriveDeadLettersRequest{GroupId: "g"}, order.ReasonInvalidArgument, "dead_letter_ids"},
		"GetStats":               {&pb.GetStatsRequest{}, order.ReasonStoreUnavailable, ""},
	}

	desc := pb.OrderService_ServiceDesc
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	methods := pb.File_orderexpiry_v1_order_service_proto.Services().ByName("OrderService").Methods()
	if len(names) != methods.Len() {
		t.Fatalf("the service descriptor has %d methods, the proto file %d", len(names), methods.Len())
	}
	for _, name := range names {
		r, ok := rows[name]
		if !ok {
			t.Errorf("no row for %s: give it a request that fails", name)
			continue
		}
		delete(rows, name)
		md := methods.ByName(protoreflect.Name(name))
		for _, port := range []struct {
			name string
			conn grpc.ClientConnInterface
		}{{"grpc", conn}, {"inproc", local}} {
			t.Run(name+"/"+port.name, func(t *testing.T) {
				err := call(ctx, port.conn, "/"+desc.ServiceName+"/"+name, md, r.req)
				checkDetails(t, err, r.reason, r.field)
			})
		}
	}
	for name := range rows {
		t.Errorf("row %s names no method of the service", name)
	}
}

// call calls a method with req and returns its error, reading a stream
// until it ends.
func call(ctx context.Context, conn grpc.ClientConnInterface, method string, md protoreflect.MethodDescriptor, req proto.Message) error {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return err
	}
	if !md.IsStreamingServer() {
		return conn.Invoke(ctx, method, req, mt.New().Interface())
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		if err := s.RecvMsg(mt.New().Interface()); err != nil {
			return err
		}
	}
}

// checkDetails checks that err is the status of a domain error of reason
// about field.
func checkDetails(t *testing.T, err error, reason order.ErrorReason, field string) {
	t.Helper()
	st := status.Convert(err)
	kind := order.KindOfReason(reason)
	if want := kindCode(kind); st.Code() != want {
		t.Fatalf("%v: code %s, want %s", err, st.Code(), want)
	}
	var info *errdetails.ErrorInfo
	var bad *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		}
	}
	if info == nil {
		t.Fatalf("%v: no ErrorInfo in the details %v: the error got past the interceptors", err, st.Details())
	}
	if info.GetDomain() != rpc.ErrorDomain || info.GetReason() != string(reason) || info.GetMetadata()["field"] != field {
		t.Errorf("ErrorInfo %v, want domain %s, reason %s, field %q", info, rpc.ErrorDomain, reason, field)
	}
	switch {
	case kind == order.KindInvalid && field != "":
		if v := bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != field || v[0].GetDescription() != st.Message() || v[0].GetReason() != string(reason) {
			t.Errorf("BadRequest %v, want one violation of %s saying %q", bad, field, st.Message())
		}
	case bad != nil:
		t.Errorf("BadRequest %v in a status of reason %s about field %q", bad, reason, field)
	}
}

func kindCode(k order.Kind) codes.Code {
	return map[order.Kind]codes.Code{
		order.KindInternal:           codes.Internal,
		order.KindInvalid:            codes.InvalidArgument,
		order.KindNotFound:           codes.NotFound,
		order.KindFailedPrecondition: codes.FailedPrecondition,
		order.KindOutOfRange:         codes.OutOfRange,
		order.KindUnavailable:        codes.Unavailable,
		order.KindResourceExhausted:  codes.ResourceExhausted,
		order.KindAborted:            codes.Aborted,
		order.KindAlreadyExists:      codes.AlreadyExists,
	}[k]
}

// TestErrorDetailsOfSettingsAndItems: a refusal that a server setting
// governs names the setting in its message and its ErrorInfo; the error of
// a batch's item has the details a call of its own would have, about the
// item's field.
func TestErrorDetailsOfSettingsAndItems(t *testing.T) {
	conn, _ := edgeServer(t, rpc.Options{Settings: rpc.Settings{order.ReasonInFlightLimit: "-max-in-flight"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := pb.NewOrderServiceClient(conn)
	if _, err := client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "g"}); err != nil {
		t.Fatal(err)
	}
	_, err := client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "g", MaxEvents: 5000})
	st := status.Convert(err)
	if want := "max_events 5000 is more than this service's limit of 1000 (-max-in-flight)"; st.Message() != want {
		t.Errorf("message %q, want %q", st.Message(), want)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetMetadata()["setting"] != "-max-in-flight" {
			t.Errorf("ErrorInfo %v, want metadata setting -max-in-flight", info)
		}
	}

	resp, err := client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: []*pb.CheckoutRequest{
		{OrderId: "a"}, {OrderId: "b", Ttl: durationpb.New(-time.Second)},
		{OrderId: "c", Deadline: timestamppb.New(time.Now().Add(-time.Hour))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResults()[0].GetCheckout() == nil {
		t.Fatalf("item 0: %v, want a checkout", resp.GetResults()[0])
	}
	// Item 1 is refused by the service's checks, item 2 by the store.
	checkDetails(t, status.FromProto(resp.GetResults()[1].GetError()).Err(), order.ReasonInvalidTTL, "requests[1].ttl")
	checkDetails(t, status.FromProto(resp.GetResults()[2].GetError()).Err(), order.ReasonInvalidDeadline, "requests[2].deadline")
}
