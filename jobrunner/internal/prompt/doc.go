// Package prompt renders a build's final prompt: the template's preamble
// followed by the spec's prompt, with variables substituted in both
// (Render). Compose adds, after the preamble, a short section that tells
// the agent its limits (time, turns, budget) and that a run a limit stops
// keeps its changes on the branch kiln/<task id> (LimitsSection), and, for
// a follow-up that starts a fresh session, a delimited section giving the
// earlier build's prompt and output as data, each bounded, its delimiters
// defused inside the texts (EarlierSection). Those sections are never
// expanded: only the preamble and the prompt hold references.
//
// # Syntax
//
// A reference is two opening braces, optional spaces or tabs, a name,
// optional spaces or tabs, two closing braces:
//
//	{{ ticket }}  {{ticket}}  {{	repo.url  }}
//
// A name starts with an ASCII letter or '_' and goes on with ASCII letters,
// digits, '_', '-' or '.'. Anything else between braces — {{ .Field }},
// {{#each}}, {{ a b }}, an unclosed {{ — is ordinary text and left as it is,
// so code in a prompt survives. A backslash right before the braces, \{{,
// writes {{ literally (the backslash is dropped) and starts no reference.
//
// Substitution is one pass of plain string replacement: a value is inserted
// as it is and never expanded again, and nothing is executed. A referenced
// variable that is missing is an error naming every missing variable,
// sorted; variables nobody references are fine.
//
// This package does not decide which variables exist (the build's, plus any
// the runner adds), nor the limits or whether a session is resumed (the
// runner's); it only renders, with no I/O.
package prompt
