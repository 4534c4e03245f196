package intake

import (
	"context"
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// ListPageBytes bounds the summaries of one page of a project's builds; a
// page that would pass it ends early, with a next cursor.
const ListPageBytes = 1 << 20

// BuildPage is one page of a project's builds.
type BuildPage struct {
	Builds     []schema.BuildSummary
	NextCursor string // empty: the last page
}

// ListQuery reads the listing of projectID's builds a query asks for, as
// GET /projects/{id}/builds and the console take it: limit (1–100, default
// 20), status (one of schema.Statuses) and cursor (a NextCursor of the same
// status filter). A bad value is a ValidationError naming its parameter.
func ListQuery(projectID string, q url.Values) (store.ListBuildsParams, error) {
	params := store.ListBuildsParams{ProjectID: projectID, Limit: 20, MaxBytes: ListPageBytes}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return params, ValidationError{{Field: "limit", Rule: "must be an integer from 1 to 100"}}
		}
		params.Limit = n
	}
	if v := q.Get("status"); v != "" {
		if !schema.Status(v).Valid() {
			return params, ValidationError{{Field: "status", Rule: "must be one of pending, running, completed, failed, cancelled"}}
		}
		params.Status = schema.Status(v)
	}
	if v := q.Get("cursor"); v != "" {
		id, ok := decodeCursor(v, cursorOrder(params.Status))
		if !ok {
			return params, ValidationError{{Field: "cursor", Rule: "is not a cursor this API returned for this status filter"}}
		}
		if store.QueueOrder(params.Status) {
			params.After = id
		} else {
			params.Before = id
		}
	}
	return params, nil
}

// ListBuildPage returns the page params (from ListQuery) asks for, with the
// cursor of the next one.
func (s *Service) ListBuildPage(ctx context.Context, params store.ListBuildsParams) (*BuildPage, error) {
	bs, more, err := s.ListBuilds(ctx, params)
	if err != nil {
		return nil, err
	}
	page := &BuildPage{Builds: bs}
	if more && len(bs) > 0 {
		page.NextCursor = encodeCursor(cursorOrder(params.Status), bs[len(bs)-1].ID)
	}
	return page, nil
}

// cursorOrder marks a cursor with the order of its listing: "b:" newest
// first (builds before the id), "q:" queue order (status pending: builds
// after the id), so a cursor is not taken for the other order's.
func cursorOrder(status schema.Status) string {
	if store.QueueOrder(status) {
		return "q:"
	}
	return "b:"
}

func encodeCursor(order, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(order + id))
}

func decodeCursor(c, order string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(b), order)
	if u, err := uuid.Parse(id); !ok || err != nil || u.String() != id {
		return "", false
	}
	return id, true
}
