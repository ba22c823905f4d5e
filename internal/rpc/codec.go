package rpc

import (
	"sync"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/orderexpiry/orderexpiry/internal/order"
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

// encoded is a message in its wire form.
type encoded []byte

// encodedEvents keeps the wire form of the latest live events, so that each
// is encoded once whatever the number of watchers it goes to.
type encodedEvents struct {
	mu    sync.RWMutex
	bytes map[eventKey]encoded
	ring  []eventKey // the cached events, oldest replaced first
	next  int
}

// eventKey names an event of the log.
type eventKey struct {
	partition int
	cursor    order.Cursor
}

func newEncodedEvents(size int) *encodedEvents {
	return &encodedEvents{bytes: make(map[eventKey]encoded, size), ring: make([]eventKey, size)}
}

// get returns the wire form of a live event, encoding it if no watcher did
// yet. Only live events may come here: their Position is the hub's, the
// same for every watcher.
func (c *encodedEvents) get(ev order.Event) (encoded, error) {
	key := eventKey{ev.Partition, ev.Cursor}
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
