package schema

import _ "embed"

// OpenAPI is the OpenAPI 3.1 description of Kiln's HTTP API: the source of
// truth for every endpoint, checked against real responses in tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
