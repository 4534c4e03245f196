package ratelimit

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Limit is the shape of a token bucket: Rate requests a second on average,
// Burst of them at once (the bucket's size; a full bucket is where an idle
// key starts).
type Limit struct {
	Rate  float64 // requests a second; Unlimited's is +Inf
	Burst int     // at least 1 unless the limit is Unlimited
}

// Unlimited lets every request through.
var Unlimited = Limit{Rate: math.Inf(1)}

// Unlimited reports whether l lets every request through.
func (l Limit) Unlimited() bool { return math.IsInf(l.Rate, 1) }

// String writes l the way the configuration table and the 429 answers do:
// "10/s, burst 200".
func (l Limit) String() string {
	if l.Unlimited() {
		return "unlimited"
	}
	return strconv.FormatFloat(l.Rate, 'f', -1, 64) + "/s, burst " + strconv.Itoa(l.Burst)
}

// Validate says what is wrong with l, if anything.
func (l Limit) Validate() error {
	switch {
	case l.Unlimited():
		return nil
	case math.IsNaN(l.Rate) || l.Rate <= 0:
		return fmt.Errorf("rate must be positive (or unlimited), got %v", l.Rate)
	case l.Burst < 1:
		return fmt.Errorf("burst must be at least 1, got %d", l.Burst)
	}
	return nil
}

// DefaultMaxKeys bounds how many buckets a Limiter keeps.
const DefaultMaxKeys = 100_000

// sweepEvery is how often a Limiter drops the buckets that are full again.
const sweepEvery = time.Minute

// Limiter is a token bucket per key (a token id, a client address). It is
// pure: time comes from the clock it is given, and it does no I/O.
//
// Memory is bounded: a bucket that has refilled to Burst is the same as no
// bucket and is dropped at the next sweep (at most a minute later); when
// MaxKeys buckets are still in use, the ones idle longest are dropped first
// (they restart full, which is the price of the bound).
type Limiter struct {
	limit   Limit
	now     func() time.Time
	maxKeys int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64   // at last; may be negative after Charge (a debt)
	last   time.Time // when tokens was computed
}

// NewLimiter returns a Limiter of limit (it must be valid). now defaults to
// time.Now and maxKeys to DefaultMaxKeys.
func NewLimiter(limit Limit, now func() time.Time, maxKeys int) *Limiter {
	if err := limit.Validate(); err != nil {
		panic("ratelimit: " + err.Error())
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{limit: limit, now: now, maxKeys: cmp.Or(maxKeys, DefaultMaxKeys), buckets: map[string]*bucket{}}
}

// Limit returns the limiter's limit.
func (l *Limiter) Limit() Limit { return l.limit }

// Allow takes a token from key's bucket. When there is none it takes
// nothing and returns false with how long until there is one.
func (l *Limiter) Allow(key string) (ok bool, wait time.Duration) {
	return l.take(key, true)
}

// Check reports, like Allow, whether key has a token, without taking it.
func (l *Limiter) Check(key string) (ok bool, wait time.Duration) {
	return l.take(key, false)
}

// Charge takes a token from key's bucket even when it is empty: a request
// already served is paid for afterwards. The debt is at most one Burst.
func (l *Limiter) Charge(key string) {
	if l.limit.Unlimited() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, l.now())
	b.tokens = max(b.tokens-1, -float64(l.limit.Burst))
}

// Len returns how many buckets the limiter holds.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Limiter) take(key string, take bool) (bool, time.Duration) {
	if l.limit.Unlimited() {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucket(key, l.now())
	if b.tokens >= 1 {
		if take {
			b.tokens--
		}
		return true, 0
	}
	wait := time.Duration(math.Round((1 - b.tokens) / l.limit.Rate * float64(time.Second)))
	return false, max(wait, time.Nanosecond)
}

// bucket returns key's bucket refilled to now, making it (full) if absent.
// l.mu is held.
func (l *Limiter) bucket(key string, now time.Time) *bucket {
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.sweep(now)
			if len(l.buckets) >= l.maxKeys {
				l.evictOldest()
			}
		}
		b = &bucket{tokens: float64(l.limit.Burst), last: now}
		l.buckets[key] = b
		return b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(float64(l.limit.Burst), b.tokens+elapsed.Seconds()*l.limit.Rate)
		b.last = now
	}
	return b
}

// sweep drops the buckets that are full again at now. l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.limit.Rate >= float64(l.limit.Burst) {
			delete(l.buckets, k)
		}
	}
}

// evictOldest drops the eighth of the buckets (at least one) that were
// used longest ago. l.mu is held.
func (l *Limiter) evictOldest() {
	type aged struct {
		key  string
		last time.Time
	}
	all := make([]aged, 0, len(l.buckets))
	for k, b := range l.buckets {
		all = append(all, aged{k, b.last})
	}
	slices.SortFunc(all, func(a, b aged) int { return cmp.Or(a.last.Compare(b.last), cmp.Compare(a.key, b.key)) })
	for _, a := range all[:max(1, len(all)/8)] {
		delete(l.buckets, a.key)
	}
}

// retryAfter is the Retry-After value of wait: whole seconds, at least 1.
func retryAfter(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}
