package client_test

import (
	"reflect"
	"testing"

	"github.com/orderexpiry/orderexpiry/client"
)

// TestRoles: every method of Client, each RPC of the service among them, is
// in exactly one role (Producer, Consumer, Inspector), so that an RPC added
// to the service is given one.
func TestRoles(t *testing.T) {
	roles := map[string]reflect.Type{
		"Producer":  reflect.TypeFor[client.Producer](),
		"Consumer":  reflect.TypeFor[client.Consumer](),
		"Inspector": reflect.TypeFor[client.Inspector](),
	}
	// The connection's own, in no role.
	none := map[string]bool{"Conn": true, "Close": true}
	c := reflect.TypeFor[*client.Client]()
	for i := range c.NumMethod() {
		m := c.Method(i).Name
		var in []string
		for name, r := range roles {
			if _, ok := r.MethodByName(m); ok {
				in = append(in, name)
			}
		}
		switch {
		case none[m] && len(in) > 0:
			t.Errorf("%s is in the roles %v, want none", m, in)
		case !none[m] && len(in) != 1:
			t.Errorf("%s is in the roles %v, want exactly one (add it to client/roles.go and doc.go)", m, in)
		}
	}
}
