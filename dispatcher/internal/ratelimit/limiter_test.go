package ratelimit

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clock is a settable time for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// step is one thing done to a limiter in a table test.
type step struct {
	advance time.Duration
	key     string // default "a"
	op      string // allow (default), check, charge
	ok      bool   // what allow or check answers
	wait    time.Duration
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		limit Limit
		steps []step
	}{
		{"the burst passes, then one more waits for a token", Limit{Rate: 2, Burst: 3}, []step{
			{ok: true}, {ok: true}, {ok: true},
			{ok: false, wait: 500 * time.Millisecond},
			{ok: false, wait: 500 * time.Millisecond, key: "a"},
		}},
		{"tokens refill at the rate", Limit{Rate: 2, Burst: 3}, []step{
			{ok: true}, {ok: true}, {ok: true}, {ok: false, wait: 500 * time.Millisecond},
			{advance: 250 * time.Millisecond, ok: false, wait: 250 * time.Millisecond},
			{advance: 250 * time.Millisecond, ok: true},
			{ok: false, wait: 500 * time.Millisecond},
		}},
		{"refill stops at the burst", Limit{Rate: 10, Burst: 2}, []step{
			{ok: true}, {ok: true}, {ok: false, wait: 100 * time.Millisecond},
			{advance: time.Hour, ok: true}, {ok: true}, {ok: false, wait: 100 * time.Millisecond},
		}},
		{"keys have buckets of their own", Limit{Rate: 1, Burst: 1}, []step{
			{ok: true}, {ok: false, wait: time.Second}, {key: "b", ok: true}, {key: "b", ok: false, wait: time.Second},
		}},
		{"slow rates wait long", Limit{Rate: 0.01, Burst: 1}, []step{
			{ok: true}, {ok: false, wait: 100 * time.Second},
			{advance: 40 * time.Second, ok: false, wait: 60 * time.Second},
		}},
		{"check does not take", Limit{Rate: 1, Burst: 1}, []step{
			{op: "check", ok: true}, {op: "check", ok: true}, {ok: true}, {op: "check", ok: false, wait: time.Second},
		}},
		{"charge takes even from an empty bucket, down to one burst of debt", Limit{Rate: 1, Burst: 2}, []step{
			{op: "charge"}, {op: "charge"}, {op: "check", ok: false, wait: time.Second},
			{op: "charge"}, {op: "check", ok: false, wait: 2 * time.Second},
			{op: "charge"}, {op: "charge"}, {op: "charge"}, {op: "check", ok: false, wait: 3 * time.Second},
			{advance: 3 * time.Second, op: "check", ok: true},
		}},
		{"unlimited lets everything through", Unlimited, []step{
			{ok: true}, {ok: true}, {op: "charge"}, {ok: true},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			l := NewLimiter(c.limit, clk.now, 0)
			for i, s := range c.steps {
				clk.advance(s.advance)
				key := s.key
				if key == "" {
					key = "a"
				}
				var ok bool
				var wait time.Duration
				switch s.op {
				case "", "allow":
					ok, wait = l.Allow(key)
				case "check":
					ok, wait = l.Check(key)
				case "charge":
					l.Charge(key)
					continue
				}
				require.Equal(t, s.ok, ok, "step %d", i)
				require.Equal(t, s.wait, wait, "step %d: wait", i)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		wait time.Duration
		want int
	}{
		{time.Nanosecond, 1}, {50 * time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2},
		{100 * time.Second, 100},
	} {
		assert.Equal(t, c.want, retryAfter(c.wait), c.wait)
	}
}

// A bucket that refilled is the same as none: the next sweep drops it, and
// a key seen again starts full, as it would have.
func TestLimiterEvictsIdleBuckets(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l := NewLimiter(Limit{Rate: 1, Burst: 5}, clk.now, 0)
	for i := range 100 {
		l.Allow(fmt.Sprint("idle-", i))
	}
	for range 5 {
		l.Allow("busy")
	}
	require.Equal(t, 101, l.Len())

	clk.advance(sweepEvery) // every idle bucket refilled (it took 1 of 5 a minute ago); busy's too
	l.Allow("busy")         // empties busy again: 5 refilled, 1 taken
	assert.Equal(t, 1, l.Len(), "the refilled buckets are gone, the one in use stays")

	clk.advance(sweepEvery / 2)
	for range 4 {
		l.Allow("busy")
	}
	l.Allow("other")
	assert.Equal(t, 2, l.Len(), "no sweep before a minute has passed")
}

// Past MaxKeys, the buckets idle longest go first; the limiter never holds more.
func TestLimiterMaxKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	l := NewLimiter(Limit{Rate: 0.001, Burst: 1}, clk.now, 16)
	for i := range 16 {
		clk.advance(time.Millisecond)
		ok, _ := l.Allow(fmt.Sprint("k", i))
		require.True(t, ok)
	}
	require.Equal(t, 16, l.Len())
	clk.advance(time.Millisecond)
	ok, _ := l.Allow("new")
	assert.True(t, ok, "a new key is served when the table is full")
	assert.Equal(t, 15, l.Len(), "the two oldest went (an eighth of 16), the new one came")
	ok, _ = l.Allow("k0")
	assert.True(t, ok, "an evicted key starts full again")
	ok, _ = l.Allow("k15")
	assert.False(t, ok, "a recent key kept its empty bucket")
	for i := range 1000 {
		l.Allow(fmt.Sprint("flood-", i))
		require.LessOrEqual(t, l.Len(), 16)
	}
}

func TestLimitValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		l   Limit
		err string
	}{
		{Limit{Rate: 1, Burst: 1}, ""},
		{Unlimited, ""},
		{Limit{Rate: 0, Burst: 1}, "rate must be positive"},
		{Limit{Rate: -1, Burst: 1}, "rate must be positive"},
		{Limit{Rate: math.NaN(), Burst: 1}, "rate must be positive"},
		{Limit{Rate: 1, Burst: 0}, "burst must be at least 1"},
	} {
		err := c.l.Validate()
		if c.err == "" {
			assert.NoError(t, err, c.l)
		} else {
			assert.ErrorContains(t, err, c.err, c.l)
		}
	}
	assert.Equal(t, "10/s, burst 200", DefaultWrites.String())
	assert.Equal(t, "0.5/s, burst 3", Limit{Rate: 0.5, Burst: 3}.String())
	assert.Equal(t, "unlimited", Unlimited.String())
}
