package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// checkoutRoute serves POST /v1/orders, the busiest REST call, as the
// generated handler does but without the generic steps around it: the
// mux's routing (a regular expression splits every path), AnnotateContext
// (which looks at every header) and two cancellable contexts, which were
// about 10% of the service's CPU a REST Checkout in benchmark 2's profile
// (BenchmarkREST/Checkout: 110 allocations a call this way, against 138).
// The call gets the same request (the same decoder) and the same metadata
// (callMetadata), and the caller the same answer (ForwardResponseMessage
// and the mux's error handler): see TestCheckoutRouteMatchesMux. A request
// off the common path (an escaped path, a Grpc-Timeout header, a method
// override) goes on to next, the mux.
func checkoutRoute(mux *runtime.ServeMux, m runtime.Marshaler, client pb.OrderServiceClient, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/orders" || r.URL.RawPath != "" ||
			r.Header.Get("Grpc-Timeout") != "" || r.Header.Get("X-HTTP-Method-Override") != "" {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		if md := callMetadata(r); md != nil {
			ctx = metadata.NewOutgoingContext(ctx, md)
		}
		var (
			req  pb.CheckoutRequest
			resp *pb.CheckoutResponse
			md   runtime.ServerMetadata
		)
		err := m.NewDecoder(r.Body).Decode(&req)
		if err != nil && !errors.Is(err, io.EOF) {
			err = status.Errorf(codes.InvalidArgument, "%v", err)
		} else {
			_, _ = io.Copy(io.Discard, r.Body)
			resp, err = client.Checkout(ctx, &req, grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
		}
		ctx = runtime.NewServerMetadataContext(ctx, md)
		if err != nil {
			runtime.HTTPError(ctx, mux, m, w, r, err)
			return
		}
		runtime.ForwardResponseMessage(ctx, mux, m, w, r, resp, mux.GetForwardResponseOptions()...)
	})
}

// callMetadata is the metadata AnnotateContext gives a call, under newMux's
// header matcher (which passes no header on): the authorization, the host
// asked for and the addresses the request came through, each only if gRPC
// can carry it; nil when there is none.
func callMetadata(r *http.Request) metadata.MD {
	var pairs []string
	for _, v := range r.Header.Values("Authorization") {
		if metadataText(v) {
			pairs = append(pairs, "authorization", v)
		}
	}
	if host := r.Header.Get("X-Forwarded-Host"); host != "" && metadataText(host) {
		pairs = append(pairs, "x-forwarded-host", host)
	} else if r.Host != "" && metadataText(r.Host) {
		pairs = append(pairs, "x-forwarded-host", r.Host)
	}
	xff := append([]string(nil), r.Header.Values("X-Forwarded-For")...)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		xff = append(xff, ip)
	}
	if v := strings.Join(xff, ", "); len(xff) > 0 && metadataText(v) {
		pairs = append(pairs, "x-forwarded-for", v)
	}
	if len(pairs) == 0 {
		return nil
	}
	return metadata.Pairs(pairs...)
}

// metadataText says whether gRPC can carry v as a metadata value: printable
// ASCII, spaces included.
func metadataText(v string) bool {
	for i := range len(v) {
		if v[i] < 0x20 || v[i] > 0x7E {
			return false
		}
	}
	return true
}
