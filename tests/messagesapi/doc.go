// Package messagesapi is a stand-in for the Anthropic Messages API that the
// real, pinned Claude Code CLI talks to in tests: point the CLI at it with
// CLIEnv and it answers POST /v1/messages from scripts the test enqueues.
//
// Each new agent conversation (one CLI run: the CLI sends the same
// X-Claude-Code-Session-Id header on every turn and retry) takes the next
// enqueued Script. A conversation's turn index is the number of assistant
// messages in the request after the run's prompt, so a retried request is
// answered by the same Turn.
//
// A run that resumes a session (claude --resume ID) keeps the session id
// and sends the earlier conversation, then its new prompt, in every
// request. The server tells it by its prompt (the last user message that
// holds no tool result): it is a conversation of its own that takes the
// next script, its turns count from 0, and Request.Earlier says how many
// assistant messages came before. A Turn's Expect lists texts the request's
// conversation must contain ("the follow-up carries the earlier
// conversation"); a request lacking one is refused with a 400 naming them
// (the CLI fails the run at once) and Request.Missing lists them.
// BigUsage is a turn's usage the CLI prices at $0.12, for budget tests
// (--max-budget-usd).
// A Turn answers with text and tool_use blocks (streamed as server-sent
// events in the API's order, or as one JSON message when the request does
// not stream), with an API error in the API's shape, after a stall, or by
// dropping the connection mid-stream. A conversation that runs past its
// script, or that found no script queued, gets a final "done" end_turn text.
//
// Requests that are not an agent turn (count_tokens, a request that offers
// no tools) get plausible answers and take no script.
//
// It is a test tool: nothing in Kiln's product code refers to it, and it
// does not interpret prompts — what it answers comes only from the scripts.
// It does not model tokens, caching or cost beyond echoing the usage a Turn
// names (the CLI computes the cost from it and the model name).
package messagesapi
