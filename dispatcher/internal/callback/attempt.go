package callback

// Outcomes of a callback attempt, as store.CallbackAttempt records them.
const (
	OutcomeDelivered = "delivered" // the receiver answered 2xx
	OutcomeRetry     = "retry"     // a retry is scheduled
	OutcomeFailed    = "failed"    // no retry: another 4xx, a refused address, or too old
)
