package ingress

import (
	_ "embed"

	"github.com/gin-gonic/gin"
)

// openAPIDocument is the OpenAPI 3.1 description of every route of the API,
// written by hand next to the handlers. internal/integration checks that it
// lists exactly the registered routes and validates every response its tests
// see against it; scripts/schemathesis.sh fuzzes a running stack with it.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the OpenAPI 3.1 document (JSON) served at
// GET /api/v1/openapi.json. The caller must not modify the slice.
func OpenAPIDocument() []byte { return openAPIDocument }

// openAPI serves the OpenAPI document. It needs no token: the document
// describes the API, not any tenant's data.
func (a *API) openAPI(c *gin.Context) {
	c.Data(200, "application/json; charset=utf-8", openAPIDocument)
}
