package api_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// 500 submissions from 50 concurrent clients: exactly 500 audit rows, 500
// River jobs and 500 distinct task ids; then 500 more that repeat 100
// Idempotency-Keys five times each: exactly 100 more builds.
func TestConcurrentSubmissions(t *testing.T) {
	e := setup(t)
	p := e.project("web")
	bot := e.token("bot", p.ID)

	const clients, perClient = 50, 10
	run := func(key func(c, i int) string) [][]string {
		ids := make([][]string, clients)
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				for i := range perClient {
					var opts []reqOpt
					if k := key(c, i); k != "" {
						opts = append(opts, header("Idempotency-Key", k))
					}
					r := e.submit(p.ID, bot, map[string]any{"prompt": fmt.Sprintf("same prompt %s", key(c, i))}, opts...)
					if !assert.Equal(t, 202, r.Status, "%s", r.Body) {
						return
					}
					var acc schema.BuildAccepted
					r.decode(t, &acc)
					ids[c] = append(ids[c], acc.TaskID)
				}
			})
		}
		wg.Wait()
		return ids
	}

	first := run(func(int, int) string { return "" })
	distinct := map[string]bool{}
	for _, ids := range first {
		for _, id := range ids {
			distinct[id] = true
		}
	}
	assert.Len(t, distinct, 500)
	assert.Equal(t, 500, e.count(`SELECT count(*) FROM builds`))
	assert.Equal(t, 500, e.count(`SELECT count(*) FROM river_job WHERE kind = 'kiln_dispatch'`))
	assert.Equal(t, 500, e.count(`SELECT count(DISTINCT args->>'build_id') FROM river_job r JOIN builds b ON b.id::text = r.args->>'build_id'`))

	// Key k = (c*perClient+i) % 100: every key is sent by five different clients at about the same time.
	keyOf := func(c, i int) string { return fmt.Sprintf("key-%d", (c*perClient+i)%100) }
	second := run(keyOf)
	byKey := map[string]map[string]bool{}
	for c, ids := range second {
		require.Len(t, ids, perClient)
		for i, id := range ids {
			k := keyOf(c, i)
			if byKey[k] == nil {
				byKey[k] = map[string]bool{}
			}
			byKey[k][id] = true
		}
	}
	require.Len(t, byKey, 100)
	for k, ids := range byKey {
		assert.Len(t, ids, 1, "every request with %s got the same task id", k)
	}
	assert.Equal(t, 600, e.count(`SELECT count(*) FROM builds`))
	assert.Equal(t, 600, e.count(`SELECT count(*) FROM river_job`))
	assert.Equal(t, 100, e.count(`SELECT count(*) FROM idempotency_keys`))
}
