package client

import (
	"cmp"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff with jitter.
type Backoff struct {
	// Initial is the first delay's upper bound. Default 250ms.
	Initial time.Duration
	// Max caps a delay. Default 10s.
	Max time.Duration
	// Multiplier grows the bound after each attempt. Default 2.
	Multiplier float64
}

func (b Backoff) withDefaults() Backoff {
	b.Initial = cmp.Or(b.Initial, 250*time.Millisecond)
	b.Max = cmp.Or(b.Max, 10*time.Second)
	b.Multiplier = cmp.Or(b.Multiplier, 2)
	return b
}

// Bound is the upper bound of the delay after the given failed attempt
// (0 for the first): Initial × Multiplier^attempt, capped at Max.
func (b Backoff) Bound(attempt int) time.Duration {
	b = b.withDefaults()
	d := float64(b.Initial)
	for i := 0; i < attempt && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	return min(time.Duration(d), b.Max)
}

// Delay is the delay after the given failed attempt: uniformly random in
// [Bound/2, Bound] ("equal jitter"), so retries of many runners spread out
// yet never come back immediately.
func (b Backoff) Delay(attempt int) time.Duration {
	bound := b.Bound(attempt)
	half := bound / 2
	if half <= 0 {
		return bound
	}
	return half + rand.N(bound-half+1)
}
