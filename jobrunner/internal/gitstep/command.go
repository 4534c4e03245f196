package gitstep

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
)

// TrailerKey is the commit trailer carrying the build id.
const TrailerKey = "Kiln-Build-Id"

// ErrInvalidOptions wraps every refusal of bad Options.
var ErrInvalidOptions = errors.New("invalid git step options")

// Options configure one git step. The author, remote and branch come from
// the project record.
type Options struct {
	// Dir is the repository's working tree, passed to git as -C; empty means
	// the Runner's working directory.
	Dir string
	// BuildID names the build in the commit message and its trailer. Required.
	BuildID string
	// AutoCommit stages every change (`git add -A`) and commits it.
	AutoCommit bool
	// AutoPush pushes the commit the step made. Without AutoCommit there is
	// nothing of the step's own to push, and nothing is pushed.
	AutoPush bool
	// AuthorName and AuthorEmail are the commit's author and committer.
	// Required with AutoCommit.
	AuthorName  string
	AuthorEmail string
	// Remote is a remote name or URL. Default "origin".
	Remote string
	// Branch is the remote branch to push to. Required with AutoPush.
	Branch string
	// ReviewBranch, when set, is the branch to commit to and push instead
	// of Branch (which then stays untouched, local and remote). See
	// CheckReviewBranch for the names it may have.
	ReviewBranch string
	// Subject is the commit's first line. Default "Kiln build <BuildID>".
	Subject string
	// Body is an optional commit message body, before the trailer.
	Body string
	// Credentials, when set, are given to the push (and to no other
	// command) on its stdin; see Credentials.Wrap.
	Credentials *Credentials
}

func (o Options) withDefaults() Options {
	o.Remote = cmp.Or(o.Remote, "origin")
	o.Subject = cmp.Or(firstLine(o.Subject), "Kiln build "+o.BuildID)
	return o
}

func (o Options) validate() error {
	var errs []error
	bad := func(field, rule string) { errs = append(errs, fmt.Errorf("%s: %s", field, rule)) }
	if o.BuildID == "" {
		bad("build id", "required")
	} else if strings.ContainsFunc(o.BuildID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("build id", "must not contain spaces or control characters")
	}
	if o.AutoCommit {
		if strings.TrimSpace(o.AuthorName) == "" {
			bad("author name", "required to commit")
		} else if hasControl(o.AuthorName) || strings.ContainsAny(o.AuthorName, "<>") {
			bad("author name", "must not contain control characters or '<' '>'")
		}
		if !strings.Contains(o.AuthorEmail, "@") {
			bad("author email", "must be an email address")
		} else if hasControl(o.AuthorEmail) || strings.ContainsAny(o.AuthorEmail, "<> ") {
			bad("author email", "must not contain spaces, control characters or '<' '>'")
		}
	}
	if o.ReviewBranch != "" {
		if err := CheckReviewBranch(o.ReviewBranch, o.Branch); err != nil {
			errs = append(errs, err)
		}
	}
	if o.AutoCommit && o.AutoPush {
		if err := checkRemote(o.Remote); err != nil {
			errs = append(errs, err)
		}
		if err := checkBranch(o.Branch); err != nil {
			errs = append(errs, err)
		}
		if err := o.Credentials.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return nil
}

// git returns argv for git in o.Dir.
func (o Options) git(args ...string) []string {
	argv := []string{"git"}
	if o.Dir != "" {
		argv = append(argv, "-C", o.Dir)
	}
	return append(argv, args...)
}

// CommitMessage is the step's commit message: the subject, the optional
// body, and the Kiln-Build-Id trailer as the last paragraph.
func CommitMessage(o Options) string {
	o = o.withDefaults()
	var b strings.Builder
	b.WriteString(o.Subject)
	b.WriteString("\n\n")
	if body := strings.TrimSpace(o.Body); body != "" {
		b.WriteString(body)
		b.WriteString("\n\n")
	}
	fmt.Fprintf(&b, "%s: %s\n", TrailerKey, o.BuildID)
	return b.String()
}

// CommitCommand returns the commit's argv and its stdin (the message):
//
//	git [-C dir] -c user.name=NAME -c user.email=EMAIL commit -F -
func CommitCommand(o Options) (argv []string, stdin []byte, err error) {
	o = o.withDefaults()
	o.AutoCommit = true
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	argv = o.git("-c", "user.name="+o.AuthorName, "-c", "user.email="+o.AuthorEmail, "commit", "-F", "-")
	return argv, []byte(CommitMessage(o)), nil
}

// PushCommand returns the push's argv:
//
//	git [-C dir] push REMOTE HEAD:refs/heads/BRANCH
//
// Never a force push: no --force or --force-with-lease, no +refspec.
func PushCommand(o Options) ([]string, error) {
	o = o.withDefaults()
	if err := errors.Join(checkRemote(o.Remote), checkBranch(o.Branch)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return o.git("push", o.Remote, "HEAD:refs/heads/"+o.Branch), nil
}

func checkRemote(remote string) error {
	switch {
	case remote == "":
		return errors.New("remote: required")
	case strings.HasPrefix(remote, "-"), strings.HasPrefix(remote, "+"):
		return fmt.Errorf("remote %q: must not start with '-' or '+'", Redact(remote))
	case hasControl(remote) || strings.ContainsRune(remote, ' '):
		return fmt.Errorf("remote %q: must not contain spaces or control characters", Redact(remote))
	}
	return nil
}

// checkBranch holds a branch name to git's ref-name rules (git-check-ref-format)
// and refuses anything that could change the refspec's meaning.
func checkBranch(branch string) error {
	bad := func(rule string) error { return fmt.Errorf("branch %q: %s", branch, rule) }
	switch {
	case branch == "":
		return errors.New("branch: required")
	case strings.HasPrefix(branch, "-"), strings.HasPrefix(branch, "+"):
		return bad("must not start with '-' or '+'")
	case strings.HasPrefix(branch, "refs/"):
		return bad("must be a branch name, not a ref (no refs/ prefix)")
	case hasControl(branch) || strings.ContainsAny(branch, " ~^:?*[\\"):
		return bad(`must not contain spaces, control characters or any of ~ ^ : ? * [ \`)
	case strings.Contains(branch, ".."), strings.Contains(branch, "@{"), strings.Contains(branch, "//"),
		branch == "@", strings.HasPrefix(branch, "/"), strings.HasSuffix(branch, "/"),
		strings.HasSuffix(branch, "."), strings.HasSuffix(branch, ".lock"),
		strings.HasPrefix(branch, "."), strings.Contains(branch, "/."):
		return bad("is not a valid git branch name")
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}
