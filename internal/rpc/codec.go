package rpc

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Codec is the server's codec: protobuf, except that an event already
// encoded (see encodedEvents) is sent as its bytes. One expiration goes to
// every watcher; encoding it once instead of once per watcher was most of
// the cost of a fan-out to many watchers. Install it with
// grpc.ForceServerCodecV2.
var Codec encoding.CodecV2 = codec{encoding.GetCodecV2(protocodec.Name)}

type codec struct{ encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(encoded); ok {
		// A SliceBuffer's Free does nothing: the shared bytes stay intact
		// for the other watchers.
		return mem.BufferSlice{mem.SliceBuffer(e)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// Unmarshal decodes a request. One of this service that does not decode
// (a string that is not UTF-8, a field cut short, groups nested past the
// decoder's limit) is not an error here, since grpc-go answers any codec
// error with INTERNAL, and before the interceptors: the message is left
// empty but for the decoding error, kept in an unknown field of its own
// (malformedField), and decodeUnary or decodeStream refuses it with
// INVALID_ARGUMENT (see malformed), once the call has been authenticated
// like any other. Other services' messages (health, reflection) keep
// grpc-go's answer.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok || m.ProtoReflect().Descriptor().ParentFile() != pb.File_orderexpiry_v1_order_service_proto {
		return err
	}
	proto.Reset(m)
	m.ProtoReflect().SetUnknown(protowire.AppendString(protowire.AppendTag(nil, malformedField, protowire.BytesType), err.Error()))
	return nil
}

// malformedField is the field number under which Unmarshal keeps the error
// of a request that did not decode. Numbers 19000 to 19999 are reserved for
// protobuf's implementations: protoc refuses them in a .proto file, so no
// client's message has this field by design.
const malformedField protowire.Number = 19999

// malformed returns the INVALID_ARGUMENT error of a request that did not
// decode (see Unmarshal), or nil for a request that did. decodeUnary and
// decodeStream call it for every method, so that none can forget it.
func malformed(req proto.Message) error {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == malformedField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			if len(v) > 200 {
				v = append(v[:200:200], "…"...) // only a crafted message has more
			}
			why := strings.ToValidUTF8(string(v), "\uFFFD")
			return order.Fail(order.ReasonMalformedRequest, "", "the request is not a valid %s message (%s); send the protobuf encoding of one",
				req.ProtoReflect().Descriptor().FullName(), why)
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}

// decodeUnary is the interceptor that refuses a unary call whose request
// did not decode (see Codec) with INVALID_ARGUMENT, before the method runs.
// NewServer installs it, last.
func decodeUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := malformedStatus(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// decodeStream is decodeUnary for streams: each message received is
// checked as it is read, the request of a server stream before the method
// runs.
func decodeStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, decodedStream{ss})
}

type decodedStream struct{ grpc.ServerStream }

func (s decodedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return malformedStatus(m)
}

// malformedStatus is malformed's error, which unaryErrors or streamErrors
// turn into its status; nil for a message that decoded or one that is not
// a protobuf message.
func malformedStatus(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	return malformed(pm)
}

// encoded is a message in its wire form.
type encoded []byte

// encodedEvents keeps the wire form of the latest live events, so that each
// is encoded once whatever the number of watchers it goes to.
type encodedEvents struct {
	mu    sync.RWMutex
	bytes map[order.EventID]encoded
	ring  []order.EventID // the cached events, oldest replaced first
	next  int
}

func newEncodedEvents(size int) *encodedEvents {
	return &encodedEvents{bytes: make(map[order.EventID]encoded, size), ring: make([]order.EventID, size)}
}

// get returns the wire form of a live event, encoding it if no watcher did
// yet. Only live events may come here: their Cursor is the hub's, the
// same for every watcher.
func (c *encodedEvents) get(ev order.Event) (encoded, error) {
	key := ev.ID()
	c.mu.RLock()
	b, ok := c.bytes[key]
	c.mu.RUnlock()
	if ok {
		return b, nil
	}
	raw, err := proto.Marshal(eventToProto(ev))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.bytes[key]; ok {
		return b, nil // another watcher was quicker
	}
	delete(c.bytes, c.ring[c.next])
	c.ring[c.next] = key
	c.next = (c.next + 1) % len(c.ring)
	c.bytes[key] = raw
	return raw, nil
}
