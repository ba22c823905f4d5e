// Package openapi holds the OpenAPI (Swagger 2.0) document that
// protoc-gen-openapiv2 generates from the protos, for the server to serve.
package openapi

import _ "embed"

// OrderService is the document of the REST API of orderexpiry.v1.OrderService.
//
//go:embed orderexpiry/v1/order_service.swagger.json
var OrderService []byte
