package store

// NextAdmissionsQuery is NextAdmissions' SQL, for tests that read its plan.
var NextAdmissionsQuery = nextAdmissionsQuery
