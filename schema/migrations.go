package schema

import "embed"

// Migrations holds Kiln's SQL migrations (goose format), applied by schema/migrate.
//
//go:embed migrations/*.sql
var Migrations embed.FS
