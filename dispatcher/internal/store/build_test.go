package store_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// TestListBuildSummariesByteBudget: a page ends before the summary that
// would pass MaxBytes, says more follow, and the next page (from its last
// id) goes on without a gap or a repeat; a page holds one summary even when
// that one alone passes the budget.
func TestListBuildSummariesByteBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	var ids []string
	for range 10 {
		id, err := uuid.NewV7()
		require.NoError(t, err)
		_, err = store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id.String(), ProjectID: p.ID,
			Spec: schema.BuildSpec{Prompt: strings.Repeat("p", 64<<10)}, RequestedBy: "bot"})
		require.NoError(t, err)
		ids = append([]string{id.String()}, ids...) // newest first
	}
	one, more, err := store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Limit: 1})
	require.NoError(t, err)
	require.Len(t, one, 1)
	require.True(t, more)
	j, err := json.Marshal(one[0])
	require.NoError(t, err)
	budget := 3*(len(j)+1) + 10 // three summaries fit, a fourth does not

	var seen []string
	pages := 0
	before := ""
	for {
		page, more, err := store.ListBuildSummaries(ctx, db.Pool,
			store.ListBuildsParams{ProjectID: p.ID, Limit: 100, MaxBytes: budget, Before: before})
		require.NoError(t, err)
		pages++
		if more {
			assert.Len(t, page, 3, "the budget, not the limit, ends page %d", pages)
		}
		for _, b := range page {
			seen = append(seen, b.ID)
		}
		if !more {
			break
		}
		before = page[len(page)-1].ID
	}
	assert.Equal(t, ids, seen, "every build once, newest first")
	assert.Equal(t, 4, pages)

	page, more, err := store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Limit: 100, MaxBytes: 1})
	require.NoError(t, err)
	assert.Len(t, page, 1, "a page always holds one summary")
	assert.True(t, more)

	page, more, err = store.ListBuildSummaries(ctx, db.Pool, store.ListBuildsParams{ProjectID: p.ID, Limit: 10})
	require.NoError(t, err)
	assert.Len(t, page, 10)
	assert.False(t, more, "exactly the limit, nothing after")
	for _, b := range page {
		assert.Equal(t, schema.DefaultTemplate, b.Template, "a spec without a template runs the default")
	}
}
